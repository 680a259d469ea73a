//! `PublishStoreActor`: sequence numbers, the store, acks, replay, flush, backpressure.
//!
//! The model, in the order things happen to one message:
//! 1. **Store.** `StoreWrites` assigns the next sequence number, appends the message to the
//!    [`Store`] and resolves the caller's request with the sequence. When the store is at
//!    capacity the write waits (FIFO, so order is kept) or fails, as configured.
//! 2. **Send.** If a connection is logged on and replayed ("live"), the message is encoded into
//!    an outbound buffer; a self-notification hands the buffer to the connection once the
//!    mailbox is drained, so a burst of publishes becomes one socket write.
//! 3. **Ack.** The ack actor sends `AckReceived` for each persisted ack. Success for `N`
//!    discards everything `<= N`. Failure for `N` (status `failure`, or reason `duplicate` /
//!    `not entitled`) looks `N` up, discards `<= N`, and sends a [`FailedWrite`] enriched with
//!    the stored message to the handler registry. A failure is reported, never retried.
//! 4. **Replay.** After every logon the store discards up to the server's last sequence and
//!    re-sends the rest in order, before any new message, then goes live.
//!
//! **Distrust.** Before obeying a persisted ack the store checks it: a sequence above the highest
//! it ever assigned, or below an earlier ack on the same connection, is a protocol violation.
//! The ack is ignored (nothing is discarded), later acks from that connection are ignored too,
//! and the connection actor is told to close it with the typed error and reconnect; the replay
//! after the next logon then re-sends everything still held.
//!
//! A [`PublishFlush`](crate::client::PublishFlush) records the highest sequence stored before it,
//! sends a `flush` command, and resolves when the store holds nothing at or below that sequence
//! and the flush ack has arrived; one timer fails it at its deadline with the count still held.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::BytesMut;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Operation, Store, StoredMessage};
use crate::client::ack_router::AckRouter;
use crate::client::config::FullPolicy;
use crate::client::connection::ConnectionActor;
use crate::client::handlers::HandlerRegistry;
use crate::client::internal::{
    AckReceived, ConnectionLost, ExpectAck, GaveUp, LoggedOn, NewWrite, ProtocolViolation,
    SendFrames, StartFlush, StopActor, StoreStats, StoreWrites, Unexpected, WriteFailed,
};
use crate::client::messages::{ClientStats, FailedWrite, UnexpectedKind, UnexpectedMessage};
use crate::error::{ConnectError, FlushError, ProtocolError, PublishError, StoreError};
use crate::protocol::{
    AckType, AckTypes, Command, Frame, Header, PublishHeader, SeqTemplate, Status,
};

static PUBLISH: Command = Command::Publish;
static DELTA_PUBLISH: Command = Command::DeltaPublish;
static SOW_DELETE: Command = Command::SowDelete;

/// How many reported failure sequences are remembered for suppressing repeats.
const REPORTED_MEMORY: usize = 65_536;

/// Most writes admitted per actor turn. A larger batch continues on later turns, so acks (and
/// failure notifications) wait behind at most this much work, not behind whole batches.
const ADMIT_SLICE: usize = 64;

/// Most turns a group commit waits for queued admission before it syncs anyway.
const MAX_COMMIT_DEFERRALS: u32 = 64;

/// Replay is sent in chunks of about this many bytes.
const REPLAY_CHUNK: usize = 1 << 20;

/// Capacity and size limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub when_full: FullPolicy,
    pub max_frame: usize,
    pub error_on_publish_gap: bool,
}

type WriteResult = Result<Option<(u64, u64)>, PublishError>;

/// Writes waiting for room, with the caller's responder.
struct WaitingWrites {
    writes: VecDeque<NewWrite>,
    cid: Option<String>,
    first: Option<u64>,
    last: u64,
    tx: oneshot::Sender<WriteResult>,
}

struct PendingFlush {
    id: u64,
    /// Everything `<= target` must be acknowledged.
    target: u64,
    /// The flush command in flight on the current connection, if any.
    cid: Option<String>,
    acked: bool,
    started: Instant,
    tx: oneshot::Sender<Result<(), FlushError>>,
}

/// The publish-store actor (see the module docs).
pub struct PublishStoreActor {
    store: Option<Box<dyn Store>>,
    next_seq: u64,
    limits: Limits,
    conn: Addr<ConnectionActor>,
    router: Addr<AckRouter>,
    registry: Addr<HandlerRegistry>,
    /// Epoch of the logged-on, replayed connection.
    live: Option<u64>,
    out: BytesMut,
    out_scheduled: bool,
    waiting: VecDeque<WaitingWrites>,
    waiting_count: usize,
    flushes: Vec<PendingFlush>,
    next_id: u64,
    last_topic: Option<Arc<str>>,
    /// The encoded header of the last plain message, for its successors to the same topic.
    template: Template,
    /// Highest sequence acknowledged as persisted (for publish-gap detection).
    highest_persisted: u64,
    /// The connection epoch and the highest persisted ack seen on it (acks never go back).
    ack_mark: Option<(u64, u64)>,
    /// A connection that broke the protocol: its remaining acks are ignored.
    poisoned: Option<u64>,
    gave_up: Option<String>,
    /// Command ids of stored sow_deletes whose callers wait for stats, by sequence: a replay
    /// re-sends them under the same id so the stats still reach the caller.
    waited: BTreeMap<u64, String>,
    /// Highest sequence handed to any connection (restored messages count as sent: an earlier
    /// process may have sent them).
    highest_sent: u64,
    /// Messages the last logon discarded (the server had them) kept until the first success
    /// ack, so a failure ack the server re-sends for one of them can still be enriched.
    limbo: Vec<StoredMessage>,
    /// Sequences already reported failed (the most recent ones), so a repeated failure ack for
    /// a message no longer held is not reported twice.
    reported: BTreeSet<u64>,
    /// A `ResumeAdmission` is queued.
    resume_scheduled: bool,
    /// Times the pending group commit waited for admission to finish.
    commit_deferrals: u32,
    /// Write requests admitted but waiting for the store's next `sync`.
    commits: Vec<(oneshot::Sender<WriteResult>, WriteResult)>,
    published: u64,
    persisted: u64,
    failed: u64,
}

impl PublishStoreActor {
    pub(crate) fn new(
        store: Option<Box<dyn Store>>,
        limits: Limits,
        conn: Addr<ConnectionActor>,
        router: Addr<AckRouter>,
        registry: Addr<HandlerRegistry>,
    ) -> Self {
        let store_last_assigned = store.as_ref().map_or(0, |s| s.last_assigned());
        let (next_seq, highest_persisted) = match &store {
            Some(s) if s.last_assigned() > 0 => (s.last_assigned() + 1, s.last_discarded()),
            _ => {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                (now_ms.saturating_mul(1_000_000) + 1, 0)
            }
        };
        PublishStoreActor {
            store,
            next_seq,
            limits,
            conn,
            router,
            registry,
            live: None,
            out: BytesMut::with_capacity(64 * 1024),
            out_scheduled: false,
            waiting: VecDeque::new(),
            waiting_count: 0,
            flushes: Vec::new(),
            next_id: 0,
            last_topic: None,
            template: None,
            highest_persisted,
            ack_mark: None,
            poisoned: None,
            gave_up: None,
            commits: Vec::new(),
            resume_scheduled: false,
            commit_deferrals: 0,
            waited: BTreeMap::new(),
            limbo: Vec::new(),
            highest_sent: store_last_assigned,
            reported: BTreeSet::new(),
            published: 0,
            persisted: 0,
            failed: 0,
        }
    }

    fn validate(&self, w: &NewWrite) -> Result<(), PublishError> {
        if w.topic.is_empty() {
            return Err(PublishError::EmptyTopic);
        }
        let weight = write_weight(w);
        // Header fields cost at most a few hundred bytes beyond the variable parts.
        let size = weight + 256;
        if size > self.limits.max_frame {
            return Err(PublishError::TooLarge {
                size,
                max: self.limits.max_frame,
            });
        }
        if self.store.is_some() && weight > self.limits.max_bytes {
            return Err(PublishError::TooLarge {
                size: weight,
                max: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    fn has_room(&self, w: &NewWrite) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let weight = write_weight(w);
        store.len() < self.limits.max_messages
            && store.bytes().saturating_add(weight) <= self.limits.max_bytes
    }

    fn fits_all(&self, writes: &[NewWrite]) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let weight: usize = writes.iter().map(write_weight).sum();
        self.waiting.is_empty()
            && store.len() + writes.len() <= self.limits.max_messages
            && store.bytes().saturating_add(weight) <= self.limits.max_bytes
    }

    fn full_error(&self) -> PublishError {
        let (messages, bytes) = self.store.as_ref().map_or((0, 0), |s| (s.len(), s.bytes()));
        PublishError::StoreFull {
            messages,
            bytes,
            max_messages: self.limits.max_messages,
            max_bytes: self.limits.max_bytes,
        }
    }

    fn intern(&mut self, topic: String) -> Arc<str> {
        match &self.last_topic {
            Some(t) if **t == *topic => t.clone(),
            _ => {
                let t: Arc<str> = topic.into();
                self.last_topic = Some(t.clone());
                t
            }
        }
    }

    /// Stores one write (room already checked) and queues it for sending; returns its sequence.
    fn admit(
        &mut self,
        w: NewWrite,
        cid: Option<&str>,
        ctx: &mut Context<Self>,
    ) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let msg = StoredMessage {
            seq,
            operation: w.operation,
            topic: self.intern(w.topic),
            data: w.data,
            options: w.options,
        };
        let mark = self.out.len();
        if self.live.is_some() {
            encode(&msg, cid, &mut self.out, &mut self.template);
        }
        if let Some(store) = &mut self.store {
            if let Err(e) = store.append(msg) {
                // Not confirmed stored, so not sent now: the caller is told the write failed.
                // A durable store may still hold it in memory (an fsync that failed after the
                // append); then the sequence is used up and the message may go out on replay.
                self.out.truncate(mark);
                if store.last_assigned() >= seq {
                    self.next_seq = seq + 1;
                }
                return Err(e);
            }
        }
        if self.live.is_some() {
            self.highest_sent = seq;
            self.schedule_send(ctx);
        }
        if let Some(cid) = cid {
            self.waited.insert(seq, cid.to_owned());
        }
        self.next_seq += 1;
        self.published += 1;
        Ok(seq)
    }

    /// Sends a write without a store (no sequence, no ack unless a cid waits for one).
    fn send_unstored(&mut self, w: &NewWrite, cid: Option<&str>, ctx: &mut Context<Self>) {
        let opts = w.options.as_deref();
        PublishHeader {
            command: Some(command_of(w.operation)),
            cid,
            topic: &w.topic,
            ack_type: if cid.is_some() {
                AckTypes::PROCESSED.with(AckType::Stats)
            } else {
                AckTypes::NONE
            },
            expiration: opts.and_then(|o| o.expiration),
            correlation_id: opts.and_then(|o| o.correlation_id.as_deref()),
            seq: None,
            sow_key: opts.and_then(|o| o.sow_key.as_deref()),
            sow_keys: opts.and_then(|o| o.sow_keys.as_deref()),
            filter: opts.and_then(|o| o.filter.as_deref()),
        }
        .encode(&w.data, &mut self.out);
        self.published += 1;
        self.schedule_send(ctx);
    }

    fn schedule_send(&mut self, ctx: &mut Context<Self>) {
        if !self.out_scheduled {
            self.out_scheduled = true;
            ctx.notify(FlushOutbound);
        }
    }

    /// Admits waiting writes, in order, while there is room; resolves each waiting request once
    /// all its writes are stored.
    fn admit_waiting(&mut self, ctx: &mut Context<Self>) {
        let mut budget = ADMIT_SLICE;
        'entries: while let Some(mut entry) = self.waiting.pop_front() {
            while let Some(w) = entry.writes.front() {
                if !self.has_room(w) {
                    self.waiting.push_front(entry);
                    return;
                }
                if budget == 0 {
                    self.waiting.push_front(entry);
                    self.schedule_resume(ctx);
                    return;
                }
                budget -= 1;
                let Some(w) = entry.writes.pop_front() else {
                    break;
                };
                self.waiting_count -= 1;
                let cid = entry.cid.take();
                match self.admit(w, cid.as_deref(), ctx) {
                    Ok(seq) => {
                        entry.first.get_or_insert(seq);
                        entry.last = seq;
                    }
                    Err(e) => {
                        self.waiting_count -= entry.writes.len();
                        let _ = entry.tx.send(Err(e.into()));
                        continue 'entries;
                    }
                }
            }
            let result = Ok(entry.first.map(|f| (f, entry.last)));
            self.resolve(entry.tx, result, ctx);
        }
    }

    /// Continues admitting waiting writes on a later turn, after the messages now in the
    /// mailbox (acks above all) have been handled.
    fn schedule_resume(&mut self, ctx: &mut Context<Self>) {
        if !self.resume_scheduled {
            self.resume_scheduled = true;
            ctx.notify(ResumeAdmission);
        }
    }

    /// Answers a write request: at once for a memory store, after the next `sync` for a store
    /// that buffers (group commit: one sync answers every write admitted since the last one).
    fn resolve(
        &mut self,
        tx: oneshot::Sender<WriteResult>,
        result: WriteResult,
        ctx: &mut Context<Self>,
    ) {
        if result.is_ok() && self.store.as_ref().is_some_and(|s| s.needs_sync()) {
            if self.commits.is_empty() {
                ctx.notify(Commit);
            }
            self.commits.push((tx, result));
        } else {
            let _ = tx.send(result);
        }
    }

    /// Messages at or below `target` not yet acknowledged (stored or waiting for room).
    fn unacknowledged_through(&self, target: u64) -> usize {
        let stored = self
            .store
            .as_ref()
            .map_or(0, |s| s.iter().take_while(|m| m.seq <= target).count());
        let waiting_first = self.next_seq;
        let waiting = if target >= waiting_first {
            ((target - waiting_first + 1) as usize).min(self.waiting_count)
        } else {
            0
        };
        stored + waiting
    }

    fn drained_through(&self, target: u64) -> bool {
        let store_clear = self
            .store
            .as_ref()
            .is_none_or(|s| s.iter().next().is_none_or(|m| m.seq > target));
        store_clear && (self.waiting_count == 0 || target < self.next_seq)
    }

    fn check_flushes(&mut self) {
        let mut i = 0;
        while i < self.flushes.len() {
            let f = &self.flushes[i];
            if f.acked && self.drained_through(f.target) {
                let f = self.flushes.swap_remove(i);
                tracing::debug!(target_seq = f.target, "publish flush complete");
                let _ = f.tx.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }

    fn send_flush_command(&mut self, id: u64, ctx: &mut Context<Self>) {
        let Some(epoch) = self.live else { return };
        let Some(f) = self.flushes.iter_mut().find(|f| f.id == id) else {
            return;
        };
        self.next_id += 1;
        let cid = format!("flush-{}", self.next_id);
        let ack = if self.store.is_some() {
            AckType::Persisted
        } else {
            AckType::Processed
        };
        let header = Header {
            command: Some(Command::Flush),
            cid: Some(cid.clone()),
            ack_type: AckTypes::only(ack),
            ..Header::default()
        };
        f.cid = Some(cid.clone());
        let (tx, rx) = oneshot::channel();
        self.router.do_send(ExpectAck {
            cid: cid.clone(),
            completes_on: ack,
            survives_reconnect: false,
            tx,
        });
        Frame::header_only(header).encode_into(&mut self.out);
        self.schedule_send(ctx);
        let _ = epoch;
        ctx.spawn(fut::wrap_future::<_, Self>(rx).map(move |res, act, ctx| {
            let Some(f) = act.flushes.iter_mut().find(|f| f.id == id) else {
                return;
            };
            if f.cid.as_deref() != Some(cid.as_str()) {
                return;
            }
            match res {
                Ok(ack) if ack.status != Some(Status::Failure) => {
                    f.acked = true;
                    act.check_flushes();
                }
                Ok(ack) => {
                    tracing::warn!(reason = ?ack.reason, "server refused the flush; retrying");
                    f.cid = None;
                    act.send_flush_command(id, ctx);
                }
                // The connection was lost: the flush is sent again after the next logon.
                Err(_) => f.cid = None,
            }
        }));
    }

    fn expire_flush(&mut self, id: u64) {
        let Some(pos) = self.flushes.iter().position(|f| f.id == id) else {
            return;
        };
        let f = self.flushes.swap_remove(pos);
        let unacknowledged = self.unacknowledged_through(f.target);
        let err = FlushError::Timeout {
            unacknowledged,
            waited_ms: f.started.elapsed().as_millis() as u64,
            connected: self.live.is_some(),
        };
        tracing::warn!(%err, "publish flush timed out");
        let _ = f.tx.send(Err(err));
    }

    /// Forgets the waited-on command ids of messages `<= up_to` (acknowledged).
    fn forget_waited(&mut self, up_to: u64) {
        if !self.waited.is_empty() {
            self.waited = self.waited.split_off(&up_to.saturating_add(1));
        }
    }

    fn on_success(&mut self, seq: u64) {
        self.forget_waited(seq);
        // Re-sent failures come before any success on a new connection: none is left to come.
        self.limbo.clear();
        let Some(store) = &mut self.store else { return };
        match store.discard_up_to(seq) {
            Ok(n) => self.persisted += n as u64,
            Err(e) => tracing::error!(%e, "publish store failed to discard acknowledged messages"),
        }
        self.highest_persisted = self.highest_persisted.max(seq);
    }

    /// Reports a never-sent message whose number the server already has (see `LoggedOn`).
    fn report_sequence_conflict(&mut self, m: StoredMessage, server_last: u64) {
        tracing::error!(
            sequence = m.seq,
            server_last,
            "the server's last sequence covers a message that was never sent; reporting it failed"
        );
        let reason = crate::protocol::Reason::Other(format!(
            "sequence conflict: the server's last sequence {server_last} for this client name \
             covers this never-sent message (is another publisher using the same client name?)"
        ));
        // No ack exists for this write: the header describes the client's own verdict.
        let ack = Header {
            command: Some(Command::Ack),
            ack_type: AckTypes::PERSISTED,
            status: Some(Status::Failure),
            reason: Some(reason.clone()),
            seq: Some(m.seq),
            ..Header::default()
        };
        self.failed += 1;
        self.reported.insert(m.seq);
        self.registry.do_send(WriteFailed(FailedWrite {
            sequence: m.seq,
            reason,
            status: Status::Failure,
            message: Some(m),
            ack,
            received_at: std::time::Instant::now(),
        }));
    }

    fn on_failure(&mut self, seq: u64, ack: Header, received_at: std::time::Instant) {
        self.forget_waited(seq);
        let mut message = self.store.as_ref().and_then(|s| s.get(seq).cloned());
        let in_store = message.is_some();
        if message.is_none() {
            // A failure the server re-sends after a logon whose last sequence covered it.
            if let Ok(i) = self.limbo.binary_search_by_key(&seq, |m| m.seq) {
                message = Some(self.limbo.remove(i));
                self.persisted = self.persisted.saturating_sub(1);
            } else if self.reported.contains(&seq) {
                tracing::debug!(
                    sequence = seq,
                    "failure already reported; ignoring the repeat"
                );
                return;
            }
        }
        self.reported.insert(seq);
        if self.reported.len() > REPORTED_MEMORY {
            self.reported.pop_first();
        }
        if let Some(store) = &mut self.store {
            match store.discard_up_to(seq) {
                Ok(n) => {
                    // Everything below the failed message was persisted.
                    self.persisted += (n as u64).saturating_sub(u64::from(in_store));
                }
                Err(e) => tracing::error!(%e, "publish store failed to discard a failed message"),
            }
        }
        if message.is_some() {
            self.failed += 1;
        }
        let reason = ack
            .reason
            .clone()
            .unwrap_or(crate::protocol::Reason::Other(String::new()));
        let status = ack.status.clone().unwrap_or_default();
        self.registry.do_send(WriteFailed(FailedWrite {
            sequence: seq,
            reason,
            status,
            message,
            ack,
            received_at,
        }));
    }
}

/// What a write will weigh once stored (see [`StoredMessage::weight`]).
fn write_weight(w: &NewWrite) -> usize {
    super::weight(&w.topic, &w.data, w.options.as_deref())
}

fn command_of(op: Operation) -> &'static Command {
    match op {
        Operation::Publish => &PUBLISH,
        Operation::DeltaPublish => &DELTA_PUBLISH,
        Operation::SowDelete => &SOW_DELETE,
    }
}

/// The [`SeqTemplate`] of the last plain message encoded, keyed by its topic and operation.
type Template = Option<(Arc<str>, Operation, SeqTemplate)>;

/// Encodes a stored message as sent and replayed: persisted ack requested, original fields.
/// A live sow_delete whose caller waits also asks for `processed` and `stats` under its cid.
/// A message without options or cid goes through the cached template of its topic.
fn encode(msg: &StoredMessage, cid: Option<&str>, dst: &mut BytesMut, template: &mut Template) {
    if cid.is_none() && msg.options.is_none() {
        let hit = matches!(template, Some((t, op, _)) if *op == msg.operation
            && (Arc::ptr_eq(t, &msg.topic) || **t == *msg.topic));
        if !hit {
            let header = PublishHeader {
                command: Some(command_of(msg.operation)),
                topic: &msg.topic,
                ack_type: AckTypes::PERSISTED,
                ..PublishHeader::default()
            };
            *template = Some((msg.topic.clone(), msg.operation, SeqTemplate::new(&header)));
        }
        if let Some((_, _, t)) = template {
            t.encode(msg.seq, &msg.data, dst);
            return;
        }
    }
    let o = msg.opts();
    let ack_type = if cid.is_some() {
        AckTypes::PROCESSED
            .with(AckType::Persisted)
            .with(AckType::Stats)
    } else {
        AckTypes::PERSISTED
    };
    PublishHeader {
        command: Some(command_of(msg.operation)),
        cid,
        topic: &msg.topic,
        ack_type,
        expiration: o.expiration,
        correlation_id: o.correlation_id.as_deref(),
        seq: Some(msg.seq),
        sow_key: o.sow_key.as_deref(),
        sow_keys: o.sow_keys.as_deref(),
        filter: o.filter.as_deref(),
    }
    .encode(&msg.data, dst);
}

impl Actor for PublishStoreActor {
    type Context = Context<Self>;
}

/// Hands the outbound buffer to the connection (self-notification, after the mailbox drains).
#[derive(Message)]
#[rtype(result = "()")]
struct FlushOutbound;

impl Handler<FlushOutbound> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: FlushOutbound, _: &mut Context<Self>) {
        self.out_scheduled = false;
        if self.out.is_empty() {
            return;
        }
        let bytes = self.out.split().freeze();
        match self.live {
            Some(epoch) => self.conn.do_send(SendFrames { epoch, bytes }),
            None => drop(bytes),
        }
    }
}

/// Group commit: syncs the store once and answers every write admitted since the last sync.
#[derive(Message)]
#[rtype(result = "()")]
struct Commit;

impl Handler<Commit> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: Commit, ctx: &mut Context<Self>) {
        // While admission of already queued writes continues on the next turns, wait for it:
        // one fsync then covers them all (a bounded number of times, so a steady stream of
        // writes cannot starve the answers).
        if self.resume_scheduled && self.commit_deferrals < MAX_COMMIT_DEFERRALS {
            self.commit_deferrals += 1;
            ctx.notify(Commit);
            return;
        }
        self.commit_deferrals = 0;
        let synced = self.store.as_mut().map_or(Ok(()), |s| s.sync());
        let commits = std::mem::take(&mut self.commits);
        match synced {
            Ok(()) => {
                for (tx, result) in commits {
                    let _ = tx.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = commits.len(), "publish store sync failed");
                let text = e.to_string();
                for (tx, _) in commits {
                    let err = StoreError::Io {
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::other(text.clone()),
                    };
                    let _ = tx.send(Err(err.into()));
                }
            }
        }
    }
}

/// Self-notification: admit more waiting writes (see `schedule_resume`).
#[derive(Message)]
#[rtype(result = "()")]
struct ResumeAdmission;

impl Handler<ResumeAdmission> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: ResumeAdmission, ctx: &mut Context<Self>) {
        self.resume_scheduled = false;
        self.admit_waiting(ctx);
        self.check_flushes();
    }
}

impl Handler<StoreWrites> for PublishStoreActor {
    type Result = Response<WriteResult>;

    fn handle(&mut self, msg: StoreWrites, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(reason) = &self.gave_up {
            return Response::reply(Err(PublishError::GaveUp {
                reason: reason.clone(),
            }));
        }
        if let Err(e) = msg.writes.iter().try_for_each(|w| self.validate(w)) {
            return Response::reply(Err(e));
        }
        if msg.writes.is_empty() {
            return Response::reply(Ok(None));
        }
        if self.store.is_none() {
            if self.live.is_none() {
                return Response::reply(Err(PublishError::NotConnected));
            }
            for w in &msg.writes {
                self.send_unstored(w, msg.cid.as_deref(), ctx);
            }
            return Response::reply(Ok(None));
        }
        if self.limits.when_full == FullPolicy::Error && !self.fits_all(&msg.writes) {
            // All or nothing: a batch is never half stored.
            return Response::reply(Err(self.full_error()));
        }
        let mut writes: VecDeque<NewWrite> = msg.writes.into();
        let mut cid = msg.cid;
        let mut first = None;
        let mut last = 0;
        if self.waiting.is_empty() {
            let mut budget = ADMIT_SLICE;
            while let Some(w) = writes.front() {
                if !self.has_room(w) {
                    break;
                }
                if budget == 0 {
                    // A time slice: the rest of a big batch is admitted on later turns, so an
                    // ack queued behind it is not held up by the whole batch.
                    self.schedule_resume(ctx);
                    break;
                }
                budget -= 1;
                let Some(w) = writes.pop_front() else { break };
                match self.admit(w, cid.take().as_deref(), ctx) {
                    Ok(seq) => {
                        first.get_or_insert(seq);
                        last = seq;
                    }
                    Err(e) => return Response::reply(Err(e.into())),
                }
            }
            if writes.is_empty() {
                let result = Ok(first.map(|f| (f, last)));
                if !self.store.as_ref().is_some_and(|s| s.needs_sync()) {
                    return Response::reply(result);
                }
                let (tx, rx) = oneshot::channel();
                self.resolve(tx, result, ctx);
                return Response::fut(
                    async move { rx.await.unwrap_or(Err(PublishError::Stopped)) },
                );
            }
        }
        let (tx, rx) = oneshot::channel();
        self.waiting_count += writes.len();
        self.waiting.push_back(WaitingWrites {
            writes,
            cid,
            first,
            last,
            tx,
        });
        Response::fut(async move { rx.await.unwrap_or(Err(PublishError::Stopped)) })
    }
}

impl PublishStoreActor {
    /// Checks a persisted ack against what this store knows before obeying it: an ack above
    /// the highest sequence ever assigned (or learned at logon) would discard messages the
    /// server never received, and a success below an earlier ack on the same connection
    /// contradicts it. Either is a protocol violation: the ack is ignored, the connection is
    /// told to close and reconnect, and the store keeps every message for the replay.
    ///
    /// A *failure* below an earlier ack is legitimate: after a logon the server first re-sends
    /// the failures an earlier connection never delivered, and a replayed message it refuses
    /// again is refused a second time, below the acks already sent (the repeat is not reported
    /// twice). Refusing that connection would lose the failure acks that follow.
    fn check_ack(&mut self, epoch: u64, seq: u64, failure: bool) -> bool {
        if self.poisoned == Some(epoch) {
            return false;
        }
        let highest = self.next_seq.saturating_sub(1);
        let error = if seq > highest {
            Some(ProtocolError::AckBeyondAssigned { seq, highest })
        } else {
            match self.ack_mark {
                Some((e, previous)) if e == epoch && seq < previous && !failure => {
                    Some(ProtocolError::AckWentBackwards { seq, previous })
                }
                _ => None,
            }
        };
        let Some(error) = error else {
            let previous = self
                .ack_mark
                .filter(|(e, _)| *e == epoch)
                .map_or(0, |m| m.1);
            self.ack_mark = Some((epoch, previous.max(seq)));
            return true;
        };
        tracing::error!(%error, epoch, "persisted ack refused; the connection will be re-established");
        self.poisoned = Some(epoch);
        if self.live == Some(epoch) {
            self.live = None;
            self.out.clear();
        }
        self.conn.do_send(ProtocolViolation { epoch, error });
        false
    }
}

impl Handler<AckReceived> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: AckReceived, ctx: &mut Context<Self>) {
        let AckReceived {
            epoch,
            ack,
            received_at,
        } = msg;
        let Some(seq) = ack.seq else {
            self.registry.do_send(Unexpected(UnexpectedMessage {
                kind: UnexpectedKind::Unclaimed,
                frame: Frame::header_only(ack),
            }));
            return;
        };
        let failed = ack.status == Some(Status::Failure)
            || ack.reason.as_ref().is_some_and(|r| r.marks_failed_write());
        if self.store.is_some() && !self.check_ack(epoch, seq, failed) {
            return;
        }
        if failed {
            self.on_failure(seq, ack, received_at);
        } else if self.store.is_some() {
            self.on_success(seq);
        } else {
            self.registry.do_send(Unexpected(UnexpectedMessage {
                kind: UnexpectedKind::Unclaimed,
                frame: Frame::header_only(ack),
            }));
        }
        self.admit_waiting(ctx);
        self.check_flushes();
    }
}

impl Handler<LoggedOn> for PublishStoreActor {
    type Result = Result<usize, ConnectError>;

    fn handle(&mut self, msg: LoggedOn, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(store) = &mut self.store {
            if self.limits.error_on_publish_gap && msg.server_last < self.highest_persisted {
                return Err(ConnectError::PublishGap {
                    server_last: msg.server_last,
                    discarded: self.highest_persisted,
                });
            }
            // A message this process stored but never sent cannot be on the server, even if the
            // server's last sequence covers its number (another publisher with this client
            // name, or a clock that went back). Discarding it would lose it silently; it is
            // reported as a failed write instead.
            let never_sent: Vec<StoredMessage> = store
                .iter()
                .take_while(|m| m.seq <= msg.server_last)
                .filter(|m| m.seq > self.highest_sent)
                .cloned()
                .collect();
            // Keep what the logon discards until the first success ack: a failure ack the
            // previous connection never delivered may still come for one of them.
            self.limbo.extend(
                store
                    .iter()
                    .take_while(|m| m.seq <= msg.server_last)
                    .filter(|m| m.seq <= self.highest_sent)
                    .cloned(),
            );
            match store.discard_up_to(msg.server_last) {
                Ok(n) => self.persisted += (n - never_sent.len()) as u64,
                Err(e) => tracing::error!(%e, "publish store failed to discard at logon"),
            }
            for m in never_sent {
                self.report_sequence_conflict(m, msg.server_last);
            }
            self.highest_persisted = self.highest_persisted.max(msg.server_last);
        }
        self.forget_waited(msg.server_last);
        self.next_seq = self.next_seq.max(msg.server_last.saturating_add(1));
        // Anything still buffered belonged to an older connection; the store replays it.
        self.out.clear();
        let mut replayed = 0;
        if let Some(store) = &self.store {
            let mut chunk = BytesMut::with_capacity(REPLAY_CHUNK.min(store.bytes() + 4096));
            for m in store.iter() {
                let cid = self.waited.get(&m.seq).map(String::as_str);
                encode(m, cid, &mut chunk, &mut self.template);
                self.highest_sent = self.highest_sent.max(m.seq);
                replayed += 1;
                if chunk.len() >= REPLAY_CHUNK {
                    self.conn.do_send(SendFrames {
                        epoch: msg.epoch,
                        bytes: chunk.split().freeze(),
                    });
                }
            }
            if !chunk.is_empty() {
                self.conn.do_send(SendFrames {
                    epoch: msg.epoch,
                    bytes: chunk.freeze(),
                });
            }
        }
        tracing::info!(
            server_last = msg.server_last,
            replayed,
            "logged on; replayed the publish store"
        );
        self.live = Some(msg.epoch);
        let resend: Vec<u64> = self
            .flushes
            .iter()
            .filter(|f| !f.acked)
            .map(|f| f.id)
            .collect();
        for id in resend {
            self.send_flush_command(id, ctx);
        }
        self.admit_waiting(ctx);
        self.check_flushes();
        Ok(replayed)
    }
}

impl Handler<ConnectionLost> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, _: &mut Context<Self>) {
        if self.live == Some(msg.epoch) {
            self.live = None;
            self.out.clear();
        }
        for f in &mut self.flushes {
            f.cid = None;
        }
    }
}

impl Handler<GaveUp> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, msg: GaveUp, _: &mut Context<Self>) {
        self.live = None;
        for f in std::mem::take(&mut self.flushes) {
            let unacknowledged = self.unacknowledged_through(f.target);
            let _ = f.tx.send(Err(FlushError::GaveUp {
                reason: msg.reason.clone(),
                unacknowledged,
            }));
        }
        for w in self.waiting.drain(..) {
            let _ = w.tx.send(Err(PublishError::GaveUp {
                reason: msg.reason.clone(),
            }));
        }
        self.waiting_count = 0;
        self.gave_up = Some(msg.reason);
    }
}

impl Handler<StartFlush> for PublishStoreActor {
    type Result = Response<Result<(), FlushError>>;

    fn handle(&mut self, msg: StartFlush, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(reason) = &self.gave_up {
            let unacknowledged = self.store.as_ref().map_or(0, |s| s.len());
            return Response::reply(Err(FlushError::GaveUp {
                reason: reason.clone(),
                unacknowledged,
            }));
        }
        // Everything stored before the flush, and every write queued for room before it.
        let target = (self.next_seq - 1).saturating_add(self.waiting_count as u64);
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = oneshot::channel();
        self.flushes.push(PendingFlush {
            id,
            target,
            cid: None,
            acked: false,
            started: Instant::now(),
            tx,
        });
        tracing::debug!(target_seq = target, "publish flush started");
        self.send_flush_command(id, ctx);
        let wait = msg.deadline.saturating_duration_since(Instant::now());
        ctx.run_later(wait, move |act, _| act.expire_flush(id));
        Response::fut(async move { rx.await.unwrap_or(Err(FlushError::Stopped)) })
    }
}

impl Handler<StoreStats> for PublishStoreActor {
    type Result = MessageResult<StoreStats>;

    fn handle(&mut self, _: StoreStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ClientStats {
            published: self.published,
            persisted: self.persisted,
            failed: self.failed,
            unacknowledged: (self.store.as_ref().map_or(0, |s| s.len()) + self.waiting_count)
                as u64,
            reconnects: 0,
        })
    }
}

impl Handler<StopActor> for PublishStoreActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        if let Some(store) = &mut self.store {
            if let Err(e) = store.sync() {
                tracing::error!(%e, "publish store failed to sync at shutdown");
            }
        }
        ctx.stop();
    }
}
