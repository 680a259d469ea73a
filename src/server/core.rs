//! The state every connection shares, the write path into the SOW and the log buffer, and the
//! group-commit log writer.
//!
//! One mutex guards [`State`]: the SOW, each client name's last *accepted* sequence, and the
//! log buffer with the last assigned log sequence number (LSN). A session accepts a whole batch
//! of writes under one lock: it checks duplicates, applies the write to the SOW, encodes the
//! record into the buffer and takes the next LSN. So the SOW, the duplicate table and the log
//! always agree on order.
//!
//! The writer is a plain thread: it swaps the buffer out under the lock, writes it with one
//! positional write into space reserved ahead ([`LogWriter`]), fsyncs per [`LogFsyncPolicy`], and
//! publishes the durable LSN on a watch channel. Sessions turn "durable LSN >= my write's LSN"
//! into persisted acks.
//!
//! When the log cannot take more (the disk is full, or writing fails), the writer records a
//! [`LogTrouble`] in the state. On a full disk, `accept` still takes writes that fit in the
//! space already reserved ([`State::log_room`]) and refuses the rest at once with a failure
//! reason, so nothing is accepted that cannot be stored and no acknowledged write is lost; the
//! writer retries the reservation every [`LOG_RETRY`] and clears the trouble by itself once
//! space is free. A failed write or fsync is retried at the same offset; until it succeeds
//! every new write is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::{Regex, RegexSet};
use tokio::sync::{watch, Notify};

use super::bookmark::{bookmark_of, BookmarkIndex};
use super::config::{LogFsyncPolicy, ServerConfig};
use super::failures::Unread;
use super::sow::{DeleteStats, RecordMeta, Sow, SowTopicConfig};
use super::subscriptions::feed::{Committed, Feed};
use super::subscriptions::Hub;
use super::txlog::format::{encode_record, encoded_len, now_us, read_sequences};
use super::txlog::retention::SegmentTable;
use super::txlog::writer::{LogWriter, WriteFailure};
use super::txlog::{Decoded, LogHolds, Record, RecordKind};
use crate::error::ServerError;
use crate::protocol::{Password, Reason};

/// Above this many unwritten log bytes, sessions wait for the writer before reading more.
pub(crate) const LOG_BACKLOG_LIMIT: usize = 32 << 20;

/// How often the writer retries a failed reservation or write.
pub(crate) const LOG_RETRY: Duration = Duration::from_millis(100);

/// Why the log cannot take every write now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LogTrouble {
    /// No more disk space could be reserved; writes fitting the room left are still taken.
    DiskFull(String),
    /// A write or fsync failed; no write is taken until a retry succeeds.
    Io(String),
}

impl LogTrouble {
    /// The failure reason a refused write gets: what happened and what to do.
    pub fn reason(&self) -> Reason {
        Reason::Other(match self {
            LogTrouble::DiskFull(_) => {
                "tx store failure: the server's disk is full (free space on the server; writes resume by themselves)".into()
            }
            LogTrouble::Io(_) => {
                "tx store failure: the server cannot write its transaction log (see the server log; writes resume once it can)".into()
            }
        })
    }
}

/// The configuration with its regexes compiled.
pub(crate) struct Settings {
    pub deny_write: Option<RegexSet>,
    /// Topics no subscription or query may read (`not entitled`).
    pub deny_read: Option<RegexSet>,
    pub sow: Vec<(Regex, Vec<String>)>,
    pub users: HashMap<String, Password>,
    /// Present when the listener speaks TLS only.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub tls_handshake_timeout: Duration,
    pub ack_conflation: Duration,
    pub fsync: LogFsyncPolicy,
    pub log_segment_bytes: u64,
    pub retain: super::txlog::Retention,
    pub snapshot_every: u64,
    pub max_sow_bytes: Option<usize>,
    pub max_message_size: usize,
    pub max_connections: usize,
    pub max_unsent_bytes: usize,
    pub logon_timeout: Duration,
    pub max_logon_frame: usize,
    pub max_pending_logons: usize,
    pub frame_timeout: Duration,
    pub max_buffered_bytes: usize,
}

fn compile(pattern: &str) -> Result<Regex, ServerError> {
    Regex::new(pattern).map_err(|e| ServerError::BadRegex {
        pattern: pattern.to_owned(),
        message: e.to_string(),
    })
}

/// A set of topic patterns, each checked on its own first so a bad one is named.
fn compile_set(patterns: &[String]) -> Result<Option<RegexSet>, ServerError> {
    for p in patterns {
        compile(p)?;
    }
    if patterns.is_empty() {
        return Ok(None);
    }
    RegexSet::new(patterns)
        .map(Some)
        .map_err(|e| ServerError::BadRegex {
            pattern: patterns.join(" | "),
            message: e.to_string(),
        })
}

impl Settings {
    pub fn compile(cfg: &ServerConfig) -> Result<Settings, ServerError> {
        for p in &cfg.deny_write {
            compile(p)?;
        }
        let deny_write = if cfg.deny_write.is_empty() {
            None
        } else {
            Some(
                RegexSet::new(&cfg.deny_write).map_err(|e| ServerError::BadRegex {
                    pattern: cfg.deny_write.join(" | "),
                    message: e.to_string(),
                })?,
            )
        };
        let deny_read = compile_set(&cfg.deny_read)?;
        let sow = cfg
            .sow
            .iter()
            .map(|(p, keys)| Ok((compile(p)?, keys.clone())))
            .collect::<Result<_, ServerError>>()?;
        Ok(Settings {
            deny_write,
            deny_read,
            sow,
            users: cfg.users.iter().cloned().collect(),
            ack_conflation: cfg.ack_conflation,
            fsync: cfg.fsync,
            log_segment_bytes: cfg.log_segment_bytes,
            retain: cfg.retain,
            snapshot_every: cfg.snapshot_every,
            max_sow_bytes: cfg.max_sow_bytes,
            max_message_size: cfg.max_message_size,
            max_connections: cfg.max_connections.max(1),
            max_unsent_bytes: cfg.max_unsent_bytes.max(1),
            tls: match &cfg.tls {
                Some(identity) => Some(tokio_rustls::TlsAcceptor::from(identity.server_config()?)),
                None => None,
            },
            tls_handshake_timeout: cfg.tls_handshake_timeout,
            logon_timeout: cfg.logon_timeout,
            max_logon_frame: cfg.max_logon_frame.max(1024),
            max_pending_logons: cfg.max_pending_logons.clamp(1, cfg.max_connections.max(1)),
            frame_timeout: cfg.frame_timeout,
            max_buffered_bytes: cfg.max_buffered_bytes.max(1),
        })
    }

    pub fn new_sow(&self) -> Sow {
        Sow::new(
            self.sow
                .iter()
                .map(|(topic, key_fields)| SowTopicConfig {
                    topic: topic.clone(),
                    key_fields: key_fields.clone(),
                })
                .collect(),
        )
    }
}

/// Everything guarded by the one state lock.
pub(crate) struct State {
    pub sow: Sow,
    /// Last accepted sequence per client name (duplicate detection).
    pub last_seq: HashMap<String, u64>,
    /// Encoded records not yet handed to the writer.
    pub log_buf: BytesMut,
    /// LSN of the last accepted record.
    pub last_lsn: u64,
    /// Timestamp of the last accepted record (µs since the Unix epoch).
    pub last_ts: u64,
    /// Tells the writer to finish.
    pub log_stop: bool,
    /// Set while the log cannot take every write (module docs).
    pub log_trouble: Option<LogTrouble>,
    /// Log bytes reserved on disk and not yet used by written or buffered records.
    pub log_room: u64,
    /// Refusals not yet demonstrably read, per client name (durable: rebuilt from the log's
    /// refusal and read records, and kept in snapshots). The next logon of the name re-sends
    /// them first.
    pub unread: Unread,
    /// Set by [`ServerHandle::kill`](super::ServerHandle::kill): the writer stops without
    /// writing what is buffered, as a killed process would.
    pub log_crash: bool,
    /// Accepted writes waiting for durability and the fan-out to subscribers.
    pub feed: Feed,
    /// Where each publisher's bookmarks are in the log.
    pub bookmarks: BookmarkIndex,
}

/// One write to accept.
pub(crate) struct Write<'a> {
    pub kind: RecordKind,
    pub seq: Option<u64>,
    pub client: &'a str,
    pub topic: &'a str,
    pub arg: Option<&'a str>,
    pub body: &'a Bytes,
    /// The publisher's correlation id (kept with SOW records and delivered to subscribers).
    pub correlation_id: Option<&'a str>,
    /// Whether the topic is a SOW topic (publish/delta skip the SOW otherwise).
    pub is_sow: bool,
}

impl State {
    /// Checks, applies and logs one write; returns its LSN and, for deletes, the stats.
    pub fn accept(&mut self, w: &Write<'_>) -> Result<(u64, DeleteStats), Reason> {
        let record = Record {
            kind: w.kind,
            seq: w.seq,
            client: w.client,
            topic: w.topic,
            arg: w.arg,
            body: w.body,
        };
        let need = encoded_len(&record);
        match &self.log_trouble {
            Some(t @ LogTrouble::DiskFull(_)) if need > self.log_room => return Err(t.reason()),
            Some(t @ LogTrouble::Io(_)) => return Err(t.reason()),
            _ => {}
        }
        if let Some(seq) = w.seq {
            if self.last_seq.get(w.client).is_some_and(|last| seq <= *last) {
                return Err(Reason::Duplicate);
            }
        }
        let ts = now_us().max(self.last_ts);
        let meta = RecordMeta {
            correlation_id: w.correlation_id.map(Into::into),
            ts,
        };
        let (mut change, mut removed) = (None, Vec::new());
        let stats = match w.kind {
            RecordKind::Publish if w.is_sow => {
                change = self
                    .sow
                    .publish_tracked(w.topic, w.arg, w.body.clone(), meta)?;
                DeleteStats::default()
            }
            RecordKind::DeltaPublish if w.is_sow => {
                change = self
                    .sow
                    .delta_publish_tracked(w.topic, w.arg, w.body, meta)?;
                DeleteStats::default()
            }
            RecordKind::Publish | RecordKind::DeltaPublish => DeleteStats::default(),
            RecordKind::DeleteByFilter => {
                let (stats, gone) = self
                    .sow
                    .delete_by_filter_tracked(w.topic, w.arg.unwrap_or(""))?;
                removed = gone;
                stats
            }
            RecordKind::DeleteByKeys => {
                let (stats, gone) = self
                    .sow
                    .delete_by_keys_tracked(w.topic, w.arg.unwrap_or(""))?;
                removed = gone;
                stats
            }
            RecordKind::DeleteByData => {
                let (stats, gone) = self.sow.delete_by_data_tracked(w.topic, w.body)?;
                removed = gone;
                stats
            }
            // Written by repair only, never accepted from a client.
            RecordKind::RepairGap => return Err(Reason::NotSupported),
            // Failure bookkeeping: logged by `refuse` and `failures_read`, never accepted.
            RecordKind::Refusal | RecordKind::FailuresRead => return Err(Reason::NotSupported),
        };
        self.last_lsn += 1;
        self.last_ts = ts;
        encode_record(&mut self.log_buf, self.last_lsn, self.last_ts, &record);
        let bookmark = bookmark_of(w.client, w.seq, self.last_lsn);
        self.bookmarks.note(self.last_lsn, bookmark);
        if self.feed.is_active() {
            let topic = self.feed.topic(w.topic);
            let ev = Committed::of_write(topic, self.last_lsn, w, bookmark, ts, change, removed);
            self.feed.push(ev);
        }
        self.log_room = self.log_room.saturating_sub(need);
        crate::metrics::server::write_accepted();
        if let Some(seq) = w.seq {
            match self.last_seq.get_mut(w.client) {
                Some(last) => *last = seq,
                None => {
                    self.last_seq.insert(w.client.to_owned(), seq);
                }
            }
        }
        Ok((self.last_lsn, stats))
    }

    /// Logs a refusal of `seq` and marks it unread; returns the LSN its failure ack waits for.
    /// `None` when the log cannot take the record now (a write error, or a full disk with no
    /// room reserved for it): the ack then goes out at once and the refusal lives in memory
    /// only, re-sent after later logons until read, but lost if the server stops first.
    pub fn refuse(&mut self, client: &str, seq: u64, reason: &Reason) -> Option<u64> {
        crate::metrics::server::write_refused();
        self.unread.insert(client, seq, reason.clone());
        self.log_bookkeeping(&Record {
            kind: RecordKind::Refusal,
            seq: Some(seq),
            client,
            topic: "",
            arg: Some(reason.as_str()),
            body: b"",
        })
    }

    /// Marks failures read; logs it when any was unread. Returns that record's LSN (`None`
    /// when nothing was unread, or the log cannot take it now: a restart then re-sends them).
    pub fn failures_read(&mut self, client: &str, seqs: &[u64]) -> Option<u64> {
        let read = self.unread.remove(client, seqs);
        if read.is_empty() {
            return None;
        }
        let body: Vec<u8> = read.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.log_bookkeeping(&Record {
            kind: RecordKind::FailuresRead,
            seq: None,
            client,
            topic: "",
            arg: None,
            body: &body,
        })
    }

    /// Appends a failure-bookkeeping record (not a write: no SOW, bookmark or feed) when the
    /// log can take it; returns its LSN.
    fn log_bookkeeping(&mut self, record: &Record<'_>) -> Option<u64> {
        let need = encoded_len(record);
        match &self.log_trouble {
            Some(LogTrouble::DiskFull(_)) if need > self.log_room => return None,
            Some(LogTrouble::Io(_)) => return None,
            _ => {}
        }
        self.last_lsn += 1;
        self.last_ts = now_us().max(self.last_ts);
        encode_record(&mut self.log_buf, self.last_lsn, self.last_ts, record);
        self.log_room = self.log_room.saturating_sub(need);
        Some(self.last_lsn)
    }

    /// Replays one recovered record into the SOW and the sequence table.
    pub fn replay(&mut self, decoded: &Decoded<'_>) {
        self.last_lsn = decoded.lsn();
        self.last_ts = decoded.timestamp_us();
        let Decoded::Record { record: rec, .. } = decoded else {
            return; // an optional kind this version does not know
        };
        if rec.kind.is_write() {
            let lsn = decoded.lsn();
            self.bookmarks
                .note(lsn, bookmark_of(rec.client, rec.seq, lsn));
        }
        let meta = RecordMeta {
            correlation_id: None, // the log does not keep correlation ids
            ts: decoded.timestamp_us(),
        };
        let result = match rec.kind {
            RecordKind::Refusal => {
                if let Some(seq) = rec.seq {
                    let reason = Reason::from_str_lossless(rec.arg.unwrap_or(""));
                    self.unread.insert(rec.client, seq, reason);
                }
                return;
            }
            RecordKind::FailuresRead => {
                let seqs: Vec<u64> = read_sequences(rec.body).collect();
                self.unread.remove(rec.client, &seqs);
                return;
            }
            RecordKind::Publish => self
                .sow
                .publish_tracked(rec.topic, rec.arg, Bytes::copy_from_slice(rec.body), meta)
                .map(drop),
            RecordKind::DeltaPublish => self
                .sow
                .delta_publish_tracked(rec.topic, rec.arg, rec.body, meta)
                .map(drop),
            RecordKind::DeleteByFilter => self
                .sow
                .delete_by_filter(rec.topic, rec.arg.unwrap_or(""))
                .map(drop),
            RecordKind::DeleteByKeys => self
                .sow
                .delete_by_keys(rec.topic, rec.arg.unwrap_or(""))
                .map(drop),
            RecordKind::DeleteByData => self.sow.delete_by_data(rec.topic, rec.body).map(drop),
            RecordKind::RepairGap => Ok(()),
        };
        if let Err(reason) = result {
            tracing::debug!(topic = rec.topic, %reason, "replayed record not applied to the SOW");
        }
        if let Some(seq) = rec.seq {
            let last = self.last_seq.entry(rec.client.to_owned()).or_insert(0);
            *last = (*last).max(seq);
        }
    }
}

/// A live connection as the registry knows it.
pub(crate) struct ConnEntry {
    pub client_name: Option<String>,
    pub kill: Arc<Notify>,
    /// Set before `kill` when another logon took the client name: the session hands over.
    pub taken_over: Arc<std::sync::atomic::AtomicBool>,
    /// Turns true when the session has ended (a takeover waits for it).
    pub ended: watch::Receiver<bool>,
}

/// Shared by the sessions, the accept loop, the writer and the handle.
pub(crate) struct Shared {
    pub settings: Arc<Settings>,
    pub state: Mutex<State>,
    /// Wakes the writer when the log buffer gets data (or on stop).
    pub log_cv: Condvar,
    /// The durable LSN.
    pub durable: watch::Sender<u64>,
    /// Acks withheld while true.
    pub stall: watch::Sender<bool>,
    /// No reading or writing on any connection while true.
    pub freeze: watch::Sender<bool>,
    /// Set once on stop.
    pub shutdown: watch::Sender<bool>,
    pub conns: Mutex<HashMap<u64, ConnEntry>>,
    pub next_conn: AtomicU64,
    /// Connections closed at accept because `max_connections` were open.
    pub refused_connections: AtomicU64,
    /// Connections closed because their unsent output passed `max_unsent_bytes`.
    pub slow_consumer_disconnects: AtomicU64,
    /// The most unsent output any connection held after a write attempt.
    pub peak_unsent: AtomicUsize,
    /// Counters kept across restarts (owned by the handle).
    pub counters: Arc<Counters>,
    /// Who may connect, and the counters of misbehaving connections closed.
    pub admission: Arc<super::admission::Admission>,
    /// The server-wide budget for connections' buffers.
    pub budget: Arc<super::budget::MemoryBudget>,
    /// What still needs old log history: retention never removes it (see
    /// [`LogHolds`]; a bookmark replay takes a hold before reading).
    pub log_holds: LogHolds,
    /// The log's segments, as the writer and retention see them.
    pub log_segments: Arc<SegmentTable>,
    /// Subscriptions: the registry and the durable position for the fan-out and replays.
    pub subs: Arc<Hub>,
    /// One snapshot at a time.
    pub snapshot_lock: Mutex<()>,
}

/// What [`ServerHandle::stats`](super::ServerHandle::stats) reports.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub logons_accepted: AtomicU64,
    pub logons_refused: AtomicU64,
}

impl Shared {
    pub fn new(
        settings: Arc<Settings>,
        state: State,
        durable: u64,
        counters: Arc<Counters>,
        log_holds: LogHolds,
        log_segments: Arc<SegmentTable>,
        subs: Arc<Hub>,
    ) -> Shared {
        Shared {
            admission: Arc::new(super::admission::Admission::new(
                settings.max_connections,
                settings.max_pending_logons,
            )),
            budget: Arc::new(super::budget::MemoryBudget::new(
                settings.max_buffered_bytes,
            )),
            settings,
            state: Mutex::new(state),
            log_cv: Condvar::new(),
            durable: watch::Sender::new(durable),
            stall: watch::Sender::new(false),
            freeze: watch::Sender::new(false),
            shutdown: watch::Sender::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            refused_connections: AtomicU64::new(0),
            slow_consumer_disconnects: AtomicU64::new(0),
            peak_unsent: AtomicUsize::new(0),
            counters,
            log_holds,
            log_segments,
            subs,
            snapshot_lock: Mutex::new(()),
        }
    }

    /// Locks the state (a poisoned lock is still usable: every update is self-contained).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn conns(&self) -> MutexGuard<'_, HashMap<u64, ConnEntry>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks (briefly, bounded) until everything accepted so far is durable; returns whether
    /// it got there.
    pub fn wait_durable_blocking(&self, timeout: Duration) -> bool {
        let target = self.lock().last_lsn;
        let deadline = Instant::now() + timeout;
        while *self.durable.borrow() < target {
            let blocked = matches!(self.lock().log_trouble, Some(LogTrouble::Io(_)));
            if Instant::now() >= deadline || blocked {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// The group-commit writer thread: batches whatever the sessions appended, writes, fsyncs per
/// policy, publishes the durable LSN; on trouble, retries (module docs). Returns when asked to
/// stop and everything is written (or, in trouble, after one last attempt).
pub(crate) fn writer_loop(shared: Arc<Shared>, mut log: LogWriter) {
    // `batch` holds records taken from the state and not yet written; after a failed write
    // it keeps them, and what the sessions add meanwhile goes behind them.
    let mut batch = BytesMut::with_capacity(1 << 20);
    // The last LSN written (the recovered end of the log until the first batch).
    let (mut lsn, mut ts) = (*shared.durable.borrow(), 0);
    let mut trouble: Option<LogTrouble> = shared.lock().log_trouble.clone();
    loop {
        let stop = {
            let mut st = shared.lock();
            while st.log_buf.is_empty() && !st.log_stop && batch.is_empty() && trouble.is_none() {
                st = shared.log_cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.log_crash {
                return;
            }
            if st.log_buf.is_empty() && !st.log_stop {
                // In trouble: wait a little (or for new records) before trying again.
                st = shared
                    .log_cv
                    .wait_timeout(st, LOG_RETRY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if !st.log_buf.is_empty() {
                if batch.is_empty() {
                    std::mem::swap(&mut st.log_buf, &mut batch);
                } else {
                    batch.extend_from_slice(&st.log_buf);
                    st.log_buf.clear();
                }
                (lsn, ts) = (st.last_lsn, st.last_ts);
            }
            st.log_stop
        };
        // Out of trouble once room is reserved again, enough for a batch still waiting.
        if matches!(trouble, Some(LogTrouble::DiskFull(_)))
            && log.top_up().is_ok()
            && log.room() >= batch.len() as u64
        {
            tracing::info!("transaction log: disk space available again; taking writes");
            trouble = None;
        }
        if !batch.is_empty() {
            match log.write(&batch, lsn, ts) {
                Ok(()) => {
                    shared.durable.send_replace(lsn);
                    shared.subs.durable_advanced(lsn);
                    crate::metrics::server::durable(lsn);
                    if matches!(trouble, Some(LogTrouble::Io(_))) {
                        tracing::info!("transaction log: writing works again; taking writes");
                        trouble = None;
                    }
                    if batch.capacity() > 4 * LOG_BACKLOG_LIMIT {
                        batch = BytesMut::with_capacity(1 << 20);
                    } else {
                        batch.clear();
                    }
                }
                Err(WriteFailure::OutOfSpace(e)) => {
                    if trouble.is_none() {
                        tracing::error!(error = %e, "transaction log: disk full; refusing writes until space is freed");
                    }
                    trouble = Some(LogTrouble::DiskFull(e.to_string()));
                }
                Err(WriteFailure::Io(e)) => {
                    if trouble.is_none() {
                        tracing::error!(error = %e, "transaction log write failed; refusing writes and retrying");
                    }
                    trouble = Some(LogTrouble::Io(e.to_string()));
                }
            }
        }
        if batch.is_empty() {
            if log.is_full() {
                // Everything up to `lsn` is written; buffered records go to the new segment.
                if let Err(e) = log.rotate(lsn + 1) {
                    tracing::warn!(error = %e, "transaction log: cannot start a new segment yet; going on in the current one");
                }
            }
            if let Err(e) = log.top_up() {
                if trouble.is_none() {
                    tracing::error!(error = %e, room = log.room(), "transaction log: disk full; refusing writes that do not fit in the space still reserved");
                }
                trouble = Some(LogTrouble::DiskFull(e.to_string()));
            }
        }
        {
            let mut st = shared.lock();
            st.log_room = log
                .room()
                .saturating_sub((batch.len() + st.log_buf.len()) as u64);
            st.log_trouble = trouble.clone();
        }
        if stop && (batch.is_empty() || trouble.is_some()) && shared.lock().log_buf.is_empty() {
            if !batch.is_empty() {
                tracing::error!(bytes = batch.len(), "transaction log: stopping with accepted, unacknowledged writes that could not be logged");
            }
            break;
        }
    }
    if let Err(e) = log.sync_all() {
        tracing::error!(error = %e, "final fsync of the transaction log failed");
    }
}

/// FNV-1a, 64 bits: the stable hash of a client name in the logon ack's bookmark.
pub(crate) fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
