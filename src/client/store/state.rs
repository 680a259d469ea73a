//! `PublishState`: the publish store's logic as a pure state machine.
//!
//! # The model
//!
//! Events come in as method calls: a write request ([`PublishState::write`]), a persisted ack,
//! a logon with the server's last sequence, a lost connection, a flush request, its ack and its
//! deadline, a group commit, "name in use", "gave up", a graceful close. Each call appends
//! [`Effect`]s (callers to answer, failures to report, timers to set) and encodes frames into
//! the outbound buffer, raising a signal the shell turns into one wake of the connection's
//! writer ([`PublishState::take_out_signal`], [`PublishState::take_outbound`]). The
//! state machine reads no clock (time comes in with the events), does no actix and no socket
//! I/O; its one dependency is the [`Store`].
//!
//! A group commit has two phases. `commit_now` hands every request stored since the last sync
//! to [`Store::start_sync`], which returns at once; the file store's I/O thread makes them
//! durable and wakes the shell, which calls [`PublishState::synced`]: only then are the writes
//! answered `Ok` and sent, a slice of `SEND_SLICE` per turn (or, if the sync failed, retracted
//! and answered `Err`, together with everything admitted after them). One sync is in flight at
//! a time; requests admitted
//! meanwhile form the next batch, started as soon as the previous one resolves, so one fsync
//! covers everything that arrived during the last. A replay after a logon sends only what is
//! durable; the rest is sent by its sync. Losing the client name and stopping (terminal, rare)
//! wait for the sync in flight; no other event does.
//!
//! It is a plain struct: a shell may keep it behind a mutex and drive it from more than one
//! place. [`super::actor::PublishStoreActor`] is the shell used today.
//!
//! What it guarantees (checked by the model-based test in `model_tests.rs`):
//! - every write answered `Ok` is later, exactly once, persisted (a success ack covers it) or
//!   reported as a [`FailedWrite`] (a failure ack, or a local verdict when no ack can come);
//! - a write answered `Err` was never sent and never will be: a durable store sends a write
//!   only after the `sync` that made it durable, and retracts it if that sync fails;
//! - a `PublishFlush` answers only after the failures it reports were handed on, in order.
//!
//! This file holds the state, the effects, the group commit and how callers are answered. The
//! events live one idea per file, each an `impl` block of [`PublishState`]: admission and
//! backpressure (`admission.rs`), acks (`acks.rs`), failure enrichment (`failures.rs`), logon
//! and replay (`replay.rs`), flushes and the read proof (`flush.rs`), losing the connection,
//! giving up, losing the name and closing (`stop.rs`), encoding (`encode.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::admission::Admission;
use super::encode::{encode, Template};
use super::failures::FailureBook;
use super::flush::Flushes;
use super::{Store, StoredMessage, SyncStart};
use crate::client::config::FullPolicy;
use crate::client::messages::{
    ClientStats, FailedWrite, FailureSource, FlushReport, LocalReason, UnexpectedMessage,
};
use crate::error::{FlushError, ProtocolError, PublishError, StoreError};
use crate::protocol::{AckType, AckTypes, Command, Header, Reason, Status};

/// Most turns a group commit waits for queued admission before it syncs anyway.
const MAX_COMMIT_DEFERRALS: u32 = 64;

/// Most durable writes encoded for the socket in one turn once their sync completes: a group
/// commit can make thousands durable at once, and encoding them all in one turn would hold the
/// arbiter thread (and every other actor on it) for about a millisecond. Unit tests use
/// slices of 2, so the model test's small batches are sliced too.
const SEND_SLICE: usize = if cfg!(test) { 2 } else { 256 };

/// Capacity and size limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub when_full: FullPolicy,
    pub max_frame: usize,
    pub error_on_publish_gap: bool,
}

/// The answer to a write request: the first and last sequence stored (`None` without a store
/// or for an empty request).
pub(crate) type WriteResult = Result<Option<(u64, u64)>, PublishError>;

/// How the caller of a write hears about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// The caller awaits the answer: an `Err` goes back to it.
    Awaited,
    /// Nobody awaits it (`do_send`): a refusal is reported as a [`FailedWrite`] with
    /// [`LocalReason::Rejected`] instead.
    Reported,
}

/// What [`PublishState::write`] did with a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answered now.
    Done(WriteResult),
    /// Answered later, through the reply attached with [`PublishState::attach`] (awaited
    /// requests only).
    Pending,
}

/// What a flush command's ack said.
#[derive(Debug)]
pub(crate) enum FlushAck {
    /// Success.
    Done,
    /// The server refused the flush (it is sent again).
    Refused(Option<Reason>),
}

/// Something the shell must do.
#[derive(Debug)]
pub(crate) enum Effect<W, F> {
    /// Answer a write request.
    Answer { reply: W, result: WriteResult },
    /// Report a failed write to the failed-write subscribers.
    Failed(FailedWrite),
    /// Hand a frame to the last-chance subscribers.
    Unexpected(UnexpectedMessage),
    /// Route the ack of flush command `cid` (of type `ack`) back as
    /// [`PublishState::flush_ack`], in order with the persisted acks.
    ExpectFlushAck { cid: String, ack: AckType },
    /// Answer a flush request, after every failure reported before this effect was delivered.
    FlushDone {
        reply: F,
        result: Result<FlushReport, FlushError>,
    },
    /// Call [`PublishState::flush_expired`] for `id` at `deadline`.
    FlushTimer { id: u64, deadline: Instant },
    /// Close connection `epoch` with this protocol error and reconnect.
    Violation { epoch: u64, error: ProtocolError },
    /// Call [`PublishState::resume`] on a later turn (after the messages queued now).
    ResumeLater,
    /// Call [`PublishState::commit`] on a later turn.
    CommitLater,
    /// Call [`PublishState::send_more`] on a later turn: a large durable batch is being sent
    /// a slice per turn.
    SendLater,
    /// The graceful close asked for with [`PublishState::close`] may proceed.
    Closed,
}

/// Why the store takes no more writes.
#[derive(Debug, Clone)]
pub(super) enum Stopped {
    GaveUp(crate::error::GiveUpReason),
    NameLost,
    /// The client stopped ([`PublishState::stop`]).
    Shutdown,
}

impl Stopped {
    pub(super) fn error(&self) -> PublishError {
        match self {
            Stopped::GaveUp(reason) => PublishError::GaveUp {
                reason: reason.clone(),
            },
            Stopped::NameLost => PublishError::NameInUse,
            Stopped::Shutdown => PublishError::Stopped,
        }
    }
}

/// Counters for [`ClientStats`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub published: u64,
    pub persisted: u64,
    pub failed: u64,
    pub predecessor_failed: u64,
}

/// Requests stored in a durable store, waiting for the group commit that answers them.
#[derive(Debug)]
pub(super) struct Uncommitted<W> {
    pub mode: WriteMode,
    pub reply: Option<W>,
    pub first: u64,
    pub last: u64,
}

/// The publish store's state (see the module docs). `W` answers a write request, `F` a flush.
pub(crate) struct PublishState<W, F> {
    pub(super) store: Option<Box<dyn Store>>,
    /// The store survives the process: writes are sent only once synced.
    pub(super) durable: bool,
    pub(super) limits: Limits,
    pub(super) next_seq: u64,
    /// The first sequence this process assigned: lower ones are a predecessor's.
    pub(super) first_own: Option<u64>,
    /// Epoch of the logged-on, replayed connection.
    pub(super) live: Option<u64>,
    /// Whole chunks of frames for the live connection that go before `out` (a replay).
    pub(super) out_queue: VecDeque<Bytes>,
    /// Frames for the live connection, appended by writes (one buffer per burst).
    pub(super) out: BytesMut,
    /// The highest sequence waiting in `out_queue` or `out` (sent once the writer takes them).
    pub(super) out_highest: u64,
    /// Something waits to be taken and the writer was (or is being) told so.
    pub(super) out_signalled: bool,
    /// The writer must be told: see [`PublishState::take_out_signal`].
    pub(super) out_notify: bool,
    pub(super) template: Template,
    pub(super) last_topic: Option<Arc<str>>,
    /// Highest sequence acknowledged as persisted (for publish-gap detection).
    pub(super) highest_persisted: u64,
    /// The connection epoch and the highest persisted ack seen on it.
    pub(super) ack_mark: Option<(u64, u64)>,
    /// A connection that broke the protocol: its remaining acks are ignored.
    pub(super) poisoned: Option<u64>,
    /// Highest sequence handed to any connection (restored messages count as sent: an earlier
    /// process may have sent them).
    pub(super) highest_sent: u64,
    /// Highest sequence that may be sent: every message of a memory store; of a durable store,
    /// what a sync made durable.
    pub(super) committed_through: u64,
    /// Highest durable sequence encoded for the live connection (or replayed at its logon):
    /// below `committed_through` while a large durable batch goes out a slice per turn.
    pub(super) sent_through: u64,
    /// A `SendLater` is queued.
    pub(super) send_scheduled: bool,
    /// Command ids of stored sow_deletes whose callers wait for stats, by sequence: a replay
    /// re-sends them under the same id so the stats still reach the caller.
    pub(super) waited: BTreeMap<u64, String>,
    pub(super) admission: Admission<W>,
    pub(super) uncommitted: Vec<Uncommitted<W>>,
    /// The requests of the group commit whose sync is in flight (handed to the store's I/O
    /// thread, not yet durable: not answered, not sent).
    pub(super) syncing: Option<Vec<Uncommitted<W>>>,
    pub(super) commit_deferrals: u32,
    pub(super) commit_scheduled: bool,
    pub(super) flushes: Flushes<F>,
    pub(super) book: FailureBook,
    pub(super) stopped: Option<Stopped>,
    /// The store is not synced any more (see `name_lost`).
    pub(super) store_frozen: bool,
    /// A graceful close completed: no more acks are obeyed or reported.
    pub(super) closed: bool,
    pub(super) counts: Counts,
    pub(super) effects: Vec<Effect<W, F>>,
}

impl<W, F> PublishState<W, F> {
    /// A state over `store` (none: fire and forget). `initial_seq` numbers the first write of
    /// a fresh store (`now_ms * 1_000_000 + 1`); a store that already assigned numbers goes on
    /// after its last.
    pub fn new(store: Option<Box<dyn Store>>, limits: Limits, initial_seq: u64) -> Self {
        let last_assigned = store.as_ref().map_or(0, |s| s.last_assigned());
        // Numbering goes on above both marks: a discard mark can be above the last message
        // on disk (a logon that covered retracted or never-synced numbers).
        let (next_seq, highest_persisted) = match &store {
            Some(s) if s.last_assigned().max(s.last_discarded()) > 0 => (
                s.last_assigned().max(s.last_discarded()) + 1,
                s.last_discarded(),
            ),
            _ => (initial_seq.max(1), 0),
        };
        PublishState {
            durable: store.as_ref().is_some_and(|s| s.is_durable()),
            store,
            limits,
            next_seq,
            first_own: None,
            live: None,
            out_queue: VecDeque::new(),
            out: BytesMut::with_capacity(64 * 1024),
            out_highest: 0,
            out_signalled: false,
            out_notify: false,
            template: None,
            last_topic: None,
            highest_persisted,
            ack_mark: None,
            poisoned: None,
            highest_sent: last_assigned,
            committed_through: last_assigned,
            sent_through: last_assigned,
            send_scheduled: false,
            waited: BTreeMap::new(),
            admission: Admission::default(),
            uncommitted: Vec::new(),
            syncing: None,
            commit_deferrals: 0,
            commit_scheduled: false,
            flushes: Flushes::default(),
            book: FailureBook::default(),
            stopped: None,
            store_frozen: false,
            closed: false,
            counts: Counts::default(),
            effects: Vec::new(),
        }
    }

    /// Sets what the store calls, from its I/O thread, when a started sync completes (the
    /// shell then calls [`PublishState::synced`]).
    pub fn set_sync_waker(&mut self, waker: super::SyncWaker) {
        if let Some(store) = &mut self.store {
            store.set_sync_waker(waker);
        }
    }

    /// Moves the effects produced so far into `into` (which should be empty).
    pub fn take_effects(&mut self, into: &mut Vec<Effect<W, F>>) {
        std::mem::swap(&mut self.effects, into);
    }

    /// Moves what waits for connection `epoch` (replay chunks, then the outbound buffer) into
    /// `into`, in order; what it moves counts as sent from now on. Nothing moves unless `epoch`
    /// is the live connection: a writer of a connection the store saw end takes nothing, and
    /// what waits for the live one stays for its own writer.
    pub fn take_outbound(&mut self, epoch: u64, into: &mut Vec<Bytes>) {
        if self.live != Some(epoch) {
            return;
        }
        self.out_signalled = false;
        into.extend(self.out_queue.drain(..));
        if !self.out.is_empty() {
            into.push(self.out.split().freeze());
        }
        self.highest_sent = self.highest_sent.max(std::mem::take(&mut self.out_highest));
    }

    /// Whether the connection's writer must be woken to call [`PublishState::take_outbound`]
    /// (once per burst: the first frame after a take sets it). Whoever drives an event reads
    /// it afterwards and wakes the writer outside the lock.
    pub fn take_out_signal(&mut self) -> bool {
        std::mem::take(&mut self.out_notify)
    }

    /// Drops what waits to be sent: it was meant for a connection that is gone (the replay
    /// after the next logon re-sends every stored message in it).
    pub(super) fn clear_outbound(&mut self) {
        self.out_queue.clear();
        self.out.clear();
        self.out_highest = 0;
        self.out_signalled = false;
    }

    pub(super) fn signal_outbound(&mut self) {
        if !self.out_signalled {
            self.out_signalled = true;
            self.out_notify = true;
        }
    }

    pub(super) fn store_len(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.len())
    }

    /// The counters (all but reconnects).
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            published: self.counts.published,
            persisted: self.counts.persisted,
            failed: self.counts.failed,
            predecessor_failed: self.counts.predecessor_failed,
            unacknowledged: (self.store_len() + self.admission.waiting_writes) as u64,
            reconnects: 0,
        }
    }

    /// Whether `seq` is a predecessor's (below everything this process assigned).
    pub(super) fn is_predecessors(&self, seq: u64) -> bool {
        self.first_own.is_none_or(|first| seq < first)
    }

    /// Counts the failure of `seq` as reported (its own or a predecessor's) and remembers it,
    /// so that a repeat is never reported; returns whether it was a predecessor's.
    pub(super) fn count_reported_failure(&mut self, seq: u64) -> bool {
        let predecessor = self.is_predecessors(seq);
        if predecessor {
            self.counts.predecessor_failed += 1;
        } else {
            self.counts.failed += 1;
        }
        self.book.reported(seq, predecessor);
        predecessor
    }

    // ----- group commit -----

    pub(super) fn schedule_commit(&mut self) {
        if !self.commit_scheduled {
            self.commit_scheduled = true;
            self.effects.push(Effect::CommitLater);
        }
    }

    /// Group commit: syncs the store once, then answers and sends every request stored since
    /// the last sync; or, if the sync fails, retracts them (never sent) and answers `Err`.
    /// While admission of queued writes goes on, waits for it (a bounded number of turns), so
    /// that one fsync covers them all.
    pub fn commit(&mut self, now: Instant) {
        self.commit_scheduled = false;
        if self.uncommitted.is_empty() {
            return;
        }
        if self.admission.resume_scheduled && self.commit_deferrals < MAX_COMMIT_DEFERRALS {
            self.commit_deferrals += 1;
            self.schedule_commit();
            return;
        }
        self.commit_now(now);
    }

    /// The group commit, now: hands every request stored since the last sync to the store's
    /// sync. A store that syncs at once (memory, the model's) resolves them here; the file
    /// store's I/O thread resolves them later, through [`PublishState::synced`]. While one
    /// sync is in flight, new requests wait for the next one (started when it resolves): one
    /// fsync covers everything admitted meanwhile.
    pub(super) fn commit_now(&mut self, now: Instant) {
        self.commit_deferrals = 0;
        if self.uncommitted.is_empty() || self.syncing.is_some() {
            return;
        }
        let started = self
            .store
            .as_mut()
            .map_or(SyncStart::Done(Ok(())), |s| s.start_sync());
        let batch = std::mem::take(&mut self.uncommitted);
        match started {
            SyncStart::Done(result) => self.resolve(batch, result, now),
            SyncStart::Started => self.syncing = Some(batch),
        }
    }

    /// A sync started by a group commit may have completed (the store's I/O thread woke the
    /// shell): if so, answers and sends its writes, or refuses them, and starts the next.
    pub fn synced(&mut self, now: Instant) {
        if self.syncing.is_none() {
            return;
        }
        let Some(result) = self.store.as_mut().and_then(|s| s.poll_sync()) else {
            return;
        };
        if let Some(batch) = self.syncing.take() {
            self.resolve(batch, result, now);
        }
        self.commit_now(now);
    }

    /// Waits for the sync in flight, if any, and resolves it: only for the rare events that
    /// must see every stored write settled (losing the client name, stopping).
    pub(super) fn settle_sync(&mut self, now: Instant) {
        if self.syncing.is_none() {
            return;
        }
        let result = self
            .store
            .as_mut()
            .and_then(|s| s.wait_sync())
            .unwrap_or(Ok(()));
        if let Some(batch) = self.syncing.take() {
            self.resolve(batch, result, now);
        }
    }

    /// Commits everything stored and waits for the syncs: every stored write is then settled
    /// (the terminal events, and the rare logon that must judge writes not yet durable).
    pub(super) fn settle_all(&mut self, now: Instant) {
        self.settle_sync(now);
        self.commit_now(now);
        self.settle_sync(now);
    }

    /// Whether a group commit's sync is in flight.
    #[cfg(test)]
    pub(crate) fn sync_in_flight(&self) -> bool {
        self.syncing.is_some()
    }

    /// The outcome of a group commit's sync: answer and send the batch, or retract and refuse
    /// it together with everything stored after it (never sent).
    fn resolve(
        &mut self,
        batch: Vec<Uncommitted<W>>,
        result: Result<(), StoreError>,
        now: Instant,
    ) {
        match result {
            Ok(()) => {
                let last = batch.last().map_or(0, |u| u.last);
                for u in batch {
                    self.answer(u.mode, u.reply, Ok(Some((u.first, u.last))));
                }
                self.send_committed(last);
            }
            Err(e) => {
                tracing::error!(error = %e, "publish store sync failed; the writes are refused");
                let later = std::mem::replace(&mut self.uncommitted, batch);
                self.uncommitted.extend(later);
                self.refuse_uncommitted(&e, now);
            }
        }
    }

    /// Sends the messages a sync just made durable, up to `last`: the first slice now, the
    /// rest on later turns.
    fn send_committed(&mut self, last: u64) {
        self.committed_through = self.committed_through.max(last);
        self.send_durable();
    }

    /// Sends the next slice of durable writes not sent yet (after a `SendLater`).
    pub fn send_more(&mut self) {
        self.send_scheduled = false;
        self.send_durable();
    }

    /// Encodes up to `SEND_SLICE` durable writes above `sent_through` for the live connection,
    /// and asks for a later turn if more remain; after the last slice, a flush command held
    /// back behind them. Without a live connection nothing is sent: the replay after the next logon
    /// sends everything durable.
    fn send_durable(&mut self) {
        let through = self.committed_through;
        // A memory store sends each write as it is stored (or in the replay).
        if !self.durable || self.live.is_none() || self.sent_through >= through {
            return;
        }
        let Some(store) = &self.store else { return };
        let mut last_encoded = None;
        // Everything durable was sent unless the slice filled up first.
        let mut reached = through;
        for (encoded, m) in store
            .iter_from(self.sent_through.saturating_add(1))
            .enumerate()
        {
            if m.seq > through {
                break;
            }
            if encoded == SEND_SLICE {
                reached = last_encoded.unwrap_or(self.sent_through);
                break;
            }
            let cid = self.waited.get(&m.seq).map(String::as_str);
            encode(m, cid, &mut self.out, &mut self.template);
            last_encoded = Some(m.seq);
        }
        self.sent_through = reached;
        if let Some(seq) = last_encoded {
            self.out_highest = self.out_highest.max(seq);
            self.signal_outbound();
        }
        if self.sent_through < through {
            if !self.send_scheduled {
                self.send_scheduled = true;
                self.effects.push(Effect::SendLater);
            }
        } else {
            // A flush command held back behind the slices goes out after the last one.
            self.pump_flush();
        }
    }

    /// Retracts every uncommitted request (and anything stored after them) and answers `Err`.
    pub(super) fn refuse_uncommitted(&mut self, e: &StoreError, now: Instant) {
        let Some(from) = self.uncommitted.first().map(|u| u.first) else {
            return;
        };
        let mut reported: Vec<StoredMessage> = Vec::new();
        if self
            .uncommitted
            .iter()
            .any(|u| u.mode == WriteMode::Reported)
        {
            if let Some(store) = &self.store {
                reported = store.iter_from(from).map(StoredMessage::from).collect();
            }
        }
        self.retract(from);
        // The room the retracted writes took is free for the writes waiting behind them.
        self.schedule_resume();
        for u in std::mem::take(&mut self.uncommitted) {
            match u.mode {
                WriteMode::Awaited => {
                    let result = Err(PublishError::Store(copy_store_error(e)));
                    self.answer(u.mode, u.reply, result);
                }
                WriteMode::Reported => {
                    let err = Arc::new(PublishError::Store(copy_store_error(e)));
                    for m in reported
                        .iter()
                        .filter(|m| (u.first..=u.last).contains(&m.seq))
                    {
                        let mut m = m.clone();
                        m.seq = 0;
                        self.report_rejected(m, err.clone(), now);
                    }
                }
            }
        }
    }

    /// Forgets stored messages `>= from` that were never sent.
    pub(super) fn retract(&mut self, from: u64) {
        let Some(store) = &mut self.store else { return };
        let held = store.iter_from(from).count() as u64;
        match store.retract(from) {
            Ok(n) => tracing::warn!(retracted = n, from, "publish store retracted unsent writes"),
            Err(e) => tracing::error!(error = %e, from,
                "publish store could not retract unsent writes from disk; a restart may replay them"),
        }
        self.counts.published = self.counts.published.saturating_sub(held);
        self.forget_waited_from(from);
    }

    // ----- answering -----

    /// Answers a write request: through its reply, or (for a request nobody awaits) by
    /// reporting nothing on success.
    pub(super) fn answer(&mut self, mode: WriteMode, reply: Option<W>, result: WriteResult) {
        match (mode, reply) {
            (WriteMode::Awaited, Some(reply)) => {
                self.effects.push(Effect::Answer { reply, result })
            }
            (WriteMode::Awaited, None) => self.admission.unattached = Some(result),
            (WriteMode::Reported, _) => {
                if let Err(e) = result {
                    // The writes themselves are reported by the caller of `answer` where it
                    // still has them; here only the count is left to say.
                    tracing::warn!(error = %e, "a write nobody awaited was refused");
                }
            }
        }
    }

    /// Attaches the reply of the request [`PublishState::write`] just left pending.
    pub fn attach(&mut self, reply: W) {
        if let Some(result) = self.admission.unattached.take() {
            self.effects.push(Effect::Answer { reply, result });
        } else if let Some(slot) = self.admission.attach_slot(&mut self.uncommitted) {
            *slot = Some(reply);
        }
    }

    /// Reports a write refused before it was stored (sequence 0) to the failed-write
    /// subscribers: nobody awaited its answer.
    pub(super) fn report_rejected(
        &mut self,
        m: StoredMessage,
        err: Arc<PublishError>,
        now: Instant,
    ) {
        let reason = Reason::Other(err.to_string());
        self.effects.push(Effect::Failed(FailedWrite {
            sequence: 0,
            ack: local_ack(0, &reason),
            reason,
            status: Status::Failure,
            message: Some(m),
            received_at: now,
            source: FailureSource::Local(LocalReason::Rejected(err)),
            predecessor: false,
        }));
    }

    /// Reports a stored write as failed by the client's own verdict, and counts it.
    pub(super) fn report_local(&mut self, m: StoredMessage, why: LocalReason, now: Instant) {
        let reason = match &why {
            LocalReason::NameInUse => Reason::NameInUse,
            LocalReason::SequenceConflict { server_last } => Reason::Other(format!(
                "sequence conflict: the server's last sequence {server_last} for this client \
                 name covers this never-sent message (is another publisher using the same \
                 client name?)"
            )),
            LocalReason::Rejected(e) => Reason::Other(e.to_string()),
        };
        let seq = m.seq;
        let predecessor = self.count_reported_failure(seq);
        self.effects.push(Effect::Failed(FailedWrite {
            sequence: seq,
            ack: local_ack(seq, &reason),
            reason,
            status: Status::Failure,
            message: Some(m),
            received_at: now,
            source: FailureSource::Local(why),
            predecessor,
        }));
    }
}

/// A copy of a store error for every request it fails (`io::Error` is not `Clone`).
pub(super) fn copy_store_error(e: &StoreError) -> StoreError {
    // Every kind keeps its own text and path (a full disk found by the I/O thread's sync is
    // still `DiskFull`, naming the segment).
    e.duplicate()
}

/// The header of a failure the client decided (no ack exists): the verdict in ack form.
fn local_ack(seq: u64, reason: &Reason) -> Header {
    Header {
        command: Some(Command::Ack),
        ack_type: AckTypes::PERSISTED,
        status: Some(Status::Failure),
        reason: Some(reason.clone()),
        seq: (seq != 0).then_some(seq),
        ..Header::default()
    }
}
