//! `PublishState`: the publish store's logic as a pure state machine.
//!
//! # The model
//!
//! Events come in as method calls: a write request ([`PublishState::write`]), a persisted ack,
//! a logon with the server's last sequence, a lost connection, a flush request, its ack and its
//! deadline, a group commit, "name in use", "gave up", a graceful close. Each call appends
//! [`Effect`]s: frames to send, callers to answer, failures to report, timers to set. The
//! state machine reads no clock (time comes in with the events), does no actix and no socket
//! I/O; its one dependency is the [`Store`], whose `sync` the state machine calls when a group
//! commit is due. It is a plain struct: a shell may keep it behind a mutex and drive it from
//! more than one place. [`super::actor::PublishStoreActor`] is the shell used today.
//!
//! What it guarantees (checked by the model-based test in `model_tests.rs`):
//! - every write answered `Ok` is later, exactly once, persisted (a success ack covers it) or
//!   reported as a [`FailedWrite`] (a failure ack, or a local verdict when no ack can come);
//! - a write answered `Err` was never sent and never will be: a durable store sends a write
//!   only after the `sync` that made it durable, and retracts it if that sync fails;
//! - a `PublishFlush` answers only after the failures it reports were handed on, in order.
//!
//! The pieces live one idea per file: admission and backpressure (`admission.rs`), logon and
//! replay (`replay.rs`), flush and the read proof (`flush.rs`), failure enrichment
//! (`failures.rs`), encoding (`encode.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::admission::Admission;
use super::encode::{encode, encode_flush, Template};
use super::failures::{FailureBook, Lookup};
use super::flush::Flushes;
use super::{Store, StoredMessage};
use crate::client::config::FullPolicy;
use crate::client::messages::{
    ClientStats, FailedWrite, FailureSource, FlushReport, LocalReason, UnexpectedKind,
    UnexpectedMessage,
};
use crate::error::{FlushError, ProtocolError, PublishError, StoreError};
use crate::protocol::{AckType, AckTypes, Command, Frame, Header, Reason, Status};

/// Most turns a group commit waits for queued admission before it syncs anyway.
const MAX_COMMIT_DEFERRALS: u32 = 64;

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
    /// Frames wait in the outbound buffer: call [`PublishState::take_outbound`] once the
    /// current burst of events is handled, and send what it returns.
    OutboundReady,
    /// Send these bytes (whole frames) on connection `epoch` now, before any later outbound
    /// buffer (replay).
    Send { epoch: u64, bytes: Bytes },
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
    /// The graceful close asked for with [`PublishState::close`] may proceed.
    Closed,
}

/// Why the store takes no more writes.
#[derive(Debug, Clone)]
pub(super) enum Stopped {
    GaveUp(String),
    NameLost,
}

impl Stopped {
    pub(super) fn error(&self) -> PublishError {
        match self {
            Stopped::GaveUp(reason) => PublishError::GaveUp {
                reason: reason.clone(),
            },
            Stopped::NameLost => PublishError::NameInUse,
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
    pub(super) out: BytesMut,
    /// The highest sequence encoded into `out` (sent once `out` is handed over).
    pub(super) out_highest: u64,
    out_signalled: bool,
    pub(super) template: Template,
    pub(super) last_topic: Option<Arc<str>>,
    /// Highest sequence acknowledged as persisted (for publish-gap detection).
    pub(super) highest_persisted: u64,
    /// The connection epoch and the highest persisted ack seen on it.
    ack_mark: Option<(u64, u64)>,
    /// A connection that broke the protocol: its remaining acks are ignored.
    poisoned: Option<u64>,
    /// Highest sequence handed to any connection (restored messages count as sent: an earlier
    /// process may have sent them).
    pub(super) highest_sent: u64,
    /// Highest sequence that may be sent: every message of a memory store; of a durable store,
    /// what a sync made durable.
    pub(super) committed_through: u64,
    /// Command ids of stored sow_deletes whose callers wait for stats, by sequence: a replay
    /// re-sends them under the same id so the stats still reach the caller.
    pub(super) waited: BTreeMap<u64, String>,
    pub(super) admission: Admission<W>,
    pub(super) uncommitted: Vec<Uncommitted<W>>,
    commit_deferrals: u32,
    commit_scheduled: bool,
    pub(super) flushes: Flushes<F>,
    pub(super) book: FailureBook,
    pub(super) stopped: Option<Stopped>,
    /// The store is not synced any more (see `name_lost`).
    store_frozen: bool,
    /// A graceful close completed: no more acks are obeyed or reported.
    closed: bool,
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
            out: BytesMut::with_capacity(64 * 1024),
            out_highest: 0,
            out_signalled: false,
            template: None,
            last_topic: None,
            highest_persisted,
            ack_mark: None,
            poisoned: None,
            highest_sent: last_assigned,
            committed_through: last_assigned,
            waited: BTreeMap::new(),
            admission: Admission::default(),
            uncommitted: Vec::new(),
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

    /// Moves the effects produced so far into `into` (which should be empty).
    pub fn take_effects(&mut self, into: &mut Vec<Effect<W, F>>) {
        std::mem::swap(&mut self.effects, into);
    }

    /// The outbound buffer for the live connection, if it holds anything. What it holds
    /// counts as sent from now on.
    pub fn take_outbound(&mut self) -> Option<(u64, Bytes)> {
        self.out_signalled = false;
        if self.out.is_empty() {
            return None;
        }
        let bytes = self.out.split().freeze();
        let epoch = self.live?;
        self.highest_sent = self.highest_sent.max(std::mem::take(&mut self.out_highest));
        Some((epoch, bytes))
    }

    /// Drops what the outbound buffer holds: it was meant for a connection that is gone (the
    /// replay after the next logon re-sends every stored message in it).
    pub(super) fn clear_outbound(&mut self) {
        self.out.clear();
        self.out_highest = 0;
    }

    pub(super) fn signal_outbound(&mut self) {
        if !self.out_signalled {
            self.out_signalled = true;
            self.effects.push(Effect::OutboundReady);
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

    /// The group commit, at once.
    pub(super) fn commit_now(&mut self, now: Instant) {
        self.commit_deferrals = 0;
        if self.uncommitted.is_empty() {
            return;
        }
        let synced = self.store.as_mut().map_or(Ok(()), |s| s.sync());
        match synced {
            Ok(()) => {
                let last = self.uncommitted.last().map_or(0, |u| u.last);
                for u in std::mem::take(&mut self.uncommitted) {
                    self.answer(u.mode, u.reply, Ok(Some((u.first, u.last))), now);
                }
                self.send_committed(last);
            }
            Err(e) => {
                tracing::error!(error = %e, "publish store sync failed; the writes are refused");
                self.refuse_uncommitted(&e, now);
            }
        }
    }

    /// Sends the messages a sync just made durable, up to `last`.
    fn send_committed(&mut self, last: u64) {
        let from = self.committed_through.saturating_add(1);
        self.committed_through = self.committed_through.max(last);
        if self.live.is_none() {
            return;
        }
        let Some(store) = &self.store else { return };
        let mut sent = None;
        for m in store.iter_from(from) {
            if m.seq > last {
                break;
            }
            let cid = self.waited.get(&m.seq).map(String::as_str);
            encode(m, cid, &mut self.out, &mut self.template);
            sent = Some(m.seq);
        }
        if let Some(seq) = sent {
            self.out_highest = self.out_highest.max(seq);
            self.signal_outbound();
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
                reported = store.iter_from(from).cloned().collect();
            }
        }
        self.retract(from);
        // The room the retracted writes took is free for the writes waiting behind them.
        self.schedule_resume();
        for u in std::mem::take(&mut self.uncommitted) {
            match u.mode {
                WriteMode::Awaited => {
                    let result = Err(PublishError::Store(copy_store_error(e)));
                    self.answer(u.mode, u.reply, result, now);
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
    pub(super) fn answer(
        &mut self,
        mode: WriteMode,
        reply: Option<W>,
        result: WriteResult,
        _now: Instant,
    ) {
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
        let predecessor = self.is_predecessors(seq);
        if predecessor {
            self.counts.predecessor_failed += 1;
        } else {
            self.counts.failed += 1;
        }
        self.book.reported(seq, predecessor);
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

    // ----- acks -----

    /// A persisted ack (no command id) arrived on connection `epoch`.
    pub fn ack(&mut self, epoch: u64, ack: Header, received_at: Instant) {
        if self.closed {
            // After a graceful close nothing more is reported: a failure arriving now was not
            // proven read, and the server tells the next process.
            tracing::debug!(sequence = ack.seq, "ack after the close ignored");
            return;
        }
        let Some(seq) = ack.seq else {
            self.effects.push(Effect::Unexpected(UnexpectedMessage {
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
            if self.live == Some(epoch) {
                let in_flight = self.flushes.inflight.is_some();
                self.flushes.proof.failure_read(in_flight);
                self.pump_flush();
            }
        } else if self.store.is_some() {
            self.on_success(seq);
        } else {
            self.effects.push(Effect::Unexpected(UnexpectedMessage {
                kind: UnexpectedKind::Unclaimed,
                frame: Frame::header_only(ack),
            }));
        }
        self.admit_waiting(received_at);
        self.check_flushes();
    }

    /// Checks a persisted ack against what this store knows before obeying it: an ack above
    /// the highest sequence ever assigned (or learned at logon) would discard messages the
    /// server never received, and a success below an earlier ack on the same connection
    /// contradicts it. Either is a protocol violation: the ack is ignored, the connection is
    /// closed and re-established, and the store keeps every message for the replay.
    ///
    /// A *failure* below an earlier ack is legitimate: after a logon the server first re-sends
    /// the failures no connection demonstrably read, and a replayed message it refuses again is
    /// refused a second time, below the acks already sent (the repeat is not reported twice).
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
            self.clear_outbound();
            self.flushes.connection_lost();
        }
        self.effects.push(Effect::Violation { epoch, error });
        false
    }

    fn on_success(&mut self, seq: u64) {
        self.forget_waited(seq);
        // Re-sent failures come before any success on a new connection: none is left to come.
        self.book.clear_limbo();
        let Some(store) = &mut self.store else { return };
        match store.discard_up_to(seq) {
            Ok(n) => self.counts.persisted += n as u64,
            Err(e) => tracing::error!(%e, "publish store failed to discard acknowledged messages"),
        }
        self.highest_persisted = self.highest_persisted.max(seq);
    }

    fn on_failure(&mut self, seq: u64, ack: Header, received_at: Instant) {
        self.forget_waited(seq);
        let stored = self.store.as_ref().and_then(|s| s.get(seq).cloned());
        let in_store = stored.is_some();
        let message = match stored {
            Some(m) => Some(m),
            None => match self.book.lookup_outside_store(seq) {
                Lookup::Limbo(m) => {
                    // Counted persisted when the logon discarded it.
                    self.counts.persisted = self.counts.persisted.saturating_sub(1);
                    Some(m)
                }
                Lookup::Repeat => {
                    tracing::debug!(
                        sequence = seq,
                        "failure already reported; ignoring the repeat"
                    );
                    return;
                }
                Lookup::Unknown => None,
            },
        };
        if let Some(store) = &mut self.store {
            match store.discard_up_to(seq) {
                // Everything below the failed message was persisted.
                Ok(n) => self.counts.persisted += (n as u64).saturating_sub(u64::from(in_store)),
                Err(e) => tracing::error!(%e, "publish store failed to discard a failed message"),
            }
        }
        let predecessor = self.is_predecessors(seq);
        if predecessor {
            self.counts.predecessor_failed += 1;
        } else {
            self.counts.failed += 1;
        }
        self.book.reported(seq, predecessor);
        let reason = ack.reason.clone().unwrap_or(Reason::Other(String::new()));
        let status = ack.status.clone().unwrap_or_default();
        self.effects.push(Effect::Failed(FailedWrite {
            sequence: seq,
            reason,
            status,
            message,
            ack,
            received_at,
            source: FailureSource::Server,
            predecessor,
        }));
    }

    /// Forgets the waited-on command ids of messages `<= up_to` (acknowledged).
    pub(super) fn forget_waited(&mut self, up_to: u64) {
        if !self.waited.is_empty() {
            self.waited = self.waited.split_off(&up_to.saturating_add(1));
        }
    }

    fn forget_waited_from(&mut self, from: u64) {
        if !self.waited.is_empty() {
            self.waited.split_off(&from);
        }
    }

    // ----- connections -----

    /// Connection `epoch` is gone.
    pub fn connection_lost(&mut self, epoch: u64) {
        if self.live == Some(epoch) {
            self.live = None;
            self.clear_outbound();
        }
        self.flushes.connection_lost();
        self.check_close();
    }

    /// The connection will not be retried any more: pending flushes and writes waiting for room
    /// fail; stored writes stay in the store (a file store keeps them for the next process).
    pub fn gave_up(&mut self, reason: String, now: Instant) {
        self.live = None;
        self.clear_outbound();
        self.flushes.connection_lost();
        self.commit_now(now);
        let unacknowledged = self.store_len() + self.admission.waiting_writes;
        for f in std::mem::take(&mut self.flushes.pending) {
            self.effects.push(Effect::FlushDone {
                reply: f.reply,
                result: Err(FlushError::GaveUp {
                    reason: reason.clone(),
                    unacknowledged,
                }),
            });
        }
        let stop = Stopped::GaveUp(reason);
        self.reject_waiting(&stop, now);
        self.stopped = Some(stop);
        self.check_close();
    }

    /// Another connection took the client name: stop for good, and account for every write
    /// not yet acknowledged.
    ///
    /// `on_live_connection`: the server said so on the live connection, after answering
    /// everything it had processed from it (the embedded server's takeover). Then no
    /// unacknowledged write is persisted, and each is reported failed with
    /// [`LocalReason::NameInUse`]. Otherwise (a logon refused with `name in use`), writes sent
    /// on an earlier connection may be persisted: nothing can be said about them. A durable
    /// store keeps everything for the next process, which replays it and reports its fate; a
    /// memory store reports the writes it never sent and loses the others, with an error log.
    pub fn name_lost(&mut self, on_live_connection: bool, now: Instant) {
        if matches!(self.stopped, Some(Stopped::NameLost)) {
            return;
        }
        self.live = None;
        self.clear_outbound();
        self.flushes.connection_lost();
        self.commit_now(now);
        let stop = Stopped::NameLost;
        self.reject_waiting(&stop, now);
        self.stopped = Some(stop);
        self.book.clear_limbo();
        self.waited.clear();
        let held: Vec<StoredMessage> = self
            .store
            .as_ref()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let report: Vec<StoredMessage> = if on_live_connection {
            held
        } else if self.durable {
            tracing::error!(
                unacknowledged = held.len(),
                "logon refused: client name in use; the writes stay in the store for the next process"
            );
            Vec::new()
        } else {
            let highest_sent = self.highest_sent;
            let (sent, never_sent): (Vec<_>, Vec<_>) =
                held.into_iter().partition(|m| m.seq <= highest_sent);
            if !sent.is_empty() {
                tracing::error!(
                    unknown = sent.len(),
                    "logon refused: client name in use; writes sent on an earlier connection \
                     have an unknown outcome and die with this memory store"
                );
            }
            never_sent
        };
        if let Some(store) = &mut self.store {
            let last = if report.is_empty() {
                store.last_discarded()
            } else {
                store.last_assigned()
            };
            // Durable, so that neither the reported writes nor the failures reported so far
            // come back from a reopened store.
            if let Err(e) = store.discard_up_to(last).and_then(|_| store.sync()) {
                // Not reported: a durable store still holds them, and the next process
                // that opens it replays them and reports their fate.
                tracing::error!(error = %e, "publish store failed to discard after losing \
                        the client name; the writes stay in the store for the next process");
                if self.durable {
                    // And never synced again: the discard mark must not reach the disk later
                    // either, or the writes would be neither reported nor replayed.
                    self.store_frozen = true;
                    return self.after_name_lost();
                }
            }
        }
        if !report.is_empty() {
            tracing::error!(
                unacknowledged = report.len(),
                "client name taken over by another connection; reporting the unacknowledged writes failed"
            );
            for m in report {
                self.report_local(m, LocalReason::NameInUse, now);
            }
        }
        self.after_name_lost();
    }

    fn after_name_lost(&mut self) {
        for f in &mut self.flushes.pending {
            f.acked = true;
        }
        self.check_flushes();
        self.check_close();
    }

    // ----- flushes -----

    /// A `PublishFlush` began at `now`, to fail at `deadline`.
    pub fn start_flush(&mut self, reply: F, deadline: Instant, now: Instant) {
        if let Some(Stopped::GaveUp(reason)) = &self.stopped {
            let unacknowledged = self.store_len();
            self.effects.push(Effect::FlushDone {
                reply,
                result: Err(FlushError::GaveUp {
                    reason: reason.clone(),
                    unacknowledged,
                }),
            });
            return;
        }
        // Everything stored before the flush, and every write queued for room before it.
        let target = (self.next_seq - 1).saturating_add(self.admission.waiting_writes as u64);
        let id = self.flushes.begin(target, now, reply);
        if matches!(self.stopped, Some(Stopped::NameLost)) {
            // No flush ack can come; nothing is left unaccounted.
            if let Some(f) = self.flushes.pending.last_mut() {
                f.acked = true;
            }
        }
        tracing::debug!(target_seq = target, "publish flush started");
        self.effects.push(Effect::FlushTimer { id, deadline });
        self.pump_flush();
        self.check_flushes();
    }

    /// Sends a flush command if one is wanted and none is in flight.
    pub(super) fn pump_flush(&mut self) {
        if self.live.is_none() || !self.flushes.command_wanted() {
            return;
        }
        let cid = self.flushes.command_sent();
        let ack = if self.store.is_some() {
            AckType::Persisted
        } else {
            AckType::Processed
        };
        self.effects.push(Effect::ExpectFlushAck {
            cid: cid.clone(),
            ack,
        });
        encode_flush(&cid, ack, &mut self.out);
        self.signal_outbound();
    }

    /// The ack of flush command `cid` arrived (in order with the persisted acks before it).
    pub fn flush_ack(&mut self, cid: &str, ack: FlushAck) {
        let success = matches!(ack, FlushAck::Done);
        if let FlushAck::Refused(reason) = &ack {
            tracing::warn!(?reason, "server refused the flush; sending it again");
        }
        if !self.flushes.ack_arrived(cid, success) {
            return;
        }
        self.pump_flush();
        self.check_flushes();
        self.check_close();
    }

    /// The deadline of flush `id` passed.
    pub fn flush_expired(&mut self, id: u64, now: Instant) {
        let Some(f) = self.flushes.take(id) else {
            return;
        };
        let err = FlushError::Timeout {
            unacknowledged: self.unacknowledged_through(f.target),
            waited_ms: now.saturating_duration_since(f.started).as_millis() as u64,
            connected: self.live.is_some(),
        };
        tracing::warn!(%err, "publish flush timed out");
        self.effects.push(Effect::FlushDone {
            reply: f.reply,
            result: Err(err),
        });
    }

    /// Messages at or below `target` not yet acknowledged (stored or waiting for room).
    fn unacknowledged_through(&self, target: u64) -> usize {
        let stored = self
            .store
            .as_ref()
            .map_or(0, |s| s.iter().take_while(|m| m.seq <= target).count());
        let waiting = if target >= self.next_seq {
            ((target - self.next_seq + 1) as usize).min(self.admission.waiting_writes)
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
        store_clear && (self.admission.waiting_writes == 0 || target < self.next_seq)
    }

    /// Answers every flush whose writes are all accounted for, in the order they began.
    pub(super) fn check_flushes(&mut self) {
        let mut i = 0;
        while i < self.flushes.pending.len() {
            let f = &self.flushes.pending[i];
            if f.acked && self.drained_through(f.target) {
                let f = self.flushes.pending.remove(i);
                let report = self.book.claim(f.target);
                tracing::debug!(
                    target_seq = f.target,
                    failed = report.failed,
                    "publish flush complete"
                );
                self.effects.push(Effect::FlushDone {
                    reply: f.reply,
                    result: Ok(report),
                });
            } else {
                i += 1;
            }
        }
    }

    // ----- closing -----

    /// A graceful close: finish proving to the server that every failure ack was read (at
    /// most two more flush round trips), then [`Effect::Closed`]. The shell bounds the wait.
    pub fn close(&mut self) {
        self.flushes.closing = true;
        self.pump_flush();
        self.check_close();
    }

    pub(super) fn check_close(&mut self) {
        if !self.flushes.closing {
            return;
        }
        // Disconnected with a proof carried over: wait (bounded by the shell) for the next
        // logon, where the proof starts over. Stopped for good: nothing more can be proven.
        let waiting_for_logon =
            self.live.is_none() && self.flushes.proof.carried() && self.stopped.is_none();
        if (self.live.is_none() && !waiting_for_logon) || self.flushes.close_ready() {
            self.flushes.closing = false;
            self.closed = true;
            self.effects.push(Effect::Closed);
        }
    }

    /// The client stops: writes still waiting for room are refused ([`PublishError::Stopped`];
    /// reported if nobody awaits them), and everything stored is made durable.
    pub fn stop(&mut self, now: Instant) {
        self.commit_now(now);
        self.reject_waiting_with(PublishError::Stopped, now);
        if self.store_frozen {
            return;
        }
        if let Some(store) = &mut self.store {
            if let Err(e) = store.sync() {
                tracing::error!(%e, "publish store failed to sync at shutdown");
            }
        }
    }
}

/// A copy of a store error for every request it fails (`io::Error` is not `Clone`).
pub(super) fn copy_store_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { path, source } => StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => StoreError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
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
