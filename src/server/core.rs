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
//! `write_all`, fsyncs per [`FsyncPolicy`], and publishes the durable LSN on a watch channel.
//! Sessions turn "durable LSN >= my write's LSN" into persisted acks.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::{Regex, RegexSet};
use tokio::sync::{watch, Notify};

use super::config::{FsyncPolicy, ServerConfig};
use super::sow::{DeleteStats, Sow, SowTopicConfig};
use super::txlog::{encode_record, Record, RecordKind};
use crate::error::ServerError;
use crate::protocol::{Password, Reason};

/// Above this many unwritten log bytes, sessions wait for the writer before reading more.
pub(crate) const LOG_BACKLOG_LIMIT: usize = 32 << 20;

/// The configuration with its regexes compiled.
pub(crate) struct Settings {
    pub deny_write: Option<RegexSet>,
    pub sow: Vec<(Regex, Vec<String>)>,
    pub users: HashMap<String, Password>,
    /// Present when the listener speaks TLS only.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub tls_handshake_timeout: Duration,
    pub ack_conflation: Duration,
    pub fsync: FsyncPolicy,
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
        let sow = cfg
            .sow
            .iter()
            .map(|(p, keys)| Ok((compile(p)?, keys.clone())))
            .collect::<Result<_, ServerError>>()?;
        Ok(Settings {
            deny_write,
            sow,
            users: cfg.users.iter().cloned().collect(),
            ack_conflation: cfg.ack_conflation,
            fsync: cfg.fsync,
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
    /// Tells the writer to finish.
    pub log_stop: bool,
    /// The writer hit an I/O error; writes are refused with `tx store failure`.
    pub log_failed: bool,
    /// Failure acks not yet written to any connection, per client name. A connection that
    /// closes before its failure acks went out would otherwise lose them: the logon ack reports
    /// a last sequence above the refused one, the client discards it, and the failure is never
    /// reported. The next logon of the same name sends these first.
    pub unreported: HashMap<String, std::collections::BTreeMap<u64, crate::protocol::Reason>>,
}

/// One write to accept.
pub(crate) struct Write<'a> {
    pub kind: RecordKind,
    pub seq: Option<u64>,
    pub client: &'a str,
    pub topic: &'a str,
    pub arg: Option<&'a str>,
    pub body: &'a Bytes,
    /// Whether the topic is a SOW topic (publish/delta skip the SOW otherwise).
    pub is_sow: bool,
}

impl State {
    /// Checks, applies and logs one write; returns its LSN and, for deletes, the stats.
    pub fn accept(&mut self, w: &Write<'_>) -> Result<(u64, DeleteStats), Reason> {
        if self.log_failed {
            return Err(Reason::TxStoreFailure);
        }
        if let Some(seq) = w.seq {
            if self.last_seq.get(w.client).is_some_and(|last| seq <= *last) {
                return Err(Reason::Duplicate);
            }
        }
        let stats = match w.kind {
            RecordKind::Publish if w.is_sow => {
                self.sow.publish(w.topic, w.arg, w.body.clone())?;
                DeleteStats::default()
            }
            RecordKind::DeltaPublish if w.is_sow => {
                self.sow.delta_publish(w.topic, w.arg, w.body)?;
                DeleteStats::default()
            }
            RecordKind::Publish | RecordKind::DeltaPublish => DeleteStats::default(),
            RecordKind::DeleteByFilter => {
                self.sow.delete_by_filter(w.topic, w.arg.unwrap_or(""))?
            }
            RecordKind::DeleteByKeys => self.sow.delete_by_keys(w.topic, w.arg.unwrap_or(""))?,
            RecordKind::DeleteByData => self.sow.delete_by_data(w.topic, w.body)?,
        };
        encode_record(
            &mut self.log_buf,
            &Record {
                kind: w.kind,
                seq: w.seq,
                client: w.client,
                topic: w.topic,
                arg: w.arg,
                body: w.body,
            },
        );
        self.last_lsn += 1;
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

    /// Replays one recovered record into the SOW and the sequence table.
    pub fn replay(&mut self, rec: &Record<'_>) {
        let result = match rec.kind {
            RecordKind::Publish => {
                self.sow
                    .publish(rec.topic, rec.arg, Bytes::copy_from_slice(rec.body))
            }
            RecordKind::DeltaPublish => self.sow.delta_publish(rec.topic, rec.arg, rec.body),
            RecordKind::DeleteByFilter => self
                .sow
                .delete_by_filter(rec.topic, rec.arg.unwrap_or(""))
                .map(drop),
            RecordKind::DeleteByKeys => self
                .sow
                .delete_by_keys(rec.topic, rec.arg.unwrap_or(""))
                .map(drop),
            RecordKind::DeleteByData => self.sow.delete_by_data(rec.topic, rec.body).map(drop),
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
            if Instant::now() >= deadline || self.lock().log_failed {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// The group-commit writer thread: batches whatever the sessions appended, writes, fsyncs per
/// policy, publishes the durable LSN. Returns when asked to stop and everything is written.
pub(crate) fn writer_loop(shared: Arc<Shared>, mut file: File, policy: FsyncPolicy) {
    let mut spare = BytesMut::with_capacity(1 << 20);
    loop {
        let lsn = {
            let mut st = shared.lock();
            while st.log_buf.is_empty() && !st.log_stop {
                st = shared.log_cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.log_buf.is_empty() {
                break;
            }
            std::mem::swap(&mut st.log_buf, &mut spare);
            st.last_lsn
        };
        let result = file.write_all(&spare).and_then(|()| match policy {
            FsyncPolicy::Batch => file.sync_data(),
            FsyncPolicy::Never => Ok(()),
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "transaction log write failed; refusing further writes");
            shared.lock().log_failed = true;
            return;
        }
        shared.durable.send_replace(lsn);
        if spare.capacity() > 4 * LOG_BACKLOG_LIMIT {
            spare = BytesMut::with_capacity(1 << 20);
        } else {
            spare.clear();
        }
    }
    if let Err(e) = file.sync_all() {
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
