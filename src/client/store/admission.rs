//! Admission and backpressure: which writes enter the store, when, and what callers hear.
//!
//! The rules:
//! - A write is **validated** first (non-empty topic, within the client's `max_frame` and the
//!   store's byte capacity). A refused write is never stored and never sent.
//! - A request (one write, or a batch) is **stored whole or not at all**. A batch larger than
//!   the whole store is refused at once ([`PublishError::BatchOverCapacity`]); otherwise it
//!   waits, in FIFO order behind earlier requests, until all of it fits (or, under
//!   [`FullPolicy::Error`], is refused with [`PublishError::StoreFull`]). Once it starts, it
//!   cannot fail half way: the room is there, and nothing else is admitted ahead of it.
//! - A memory store admits at most `ADMIT_SLICE` writes per turn; the rest of a big batch
//!   continues on later turns, so acks and failure notifications wait behind at most that much
//!   work. Room an ack frees is taken on a later turn too, never in the ack's own turn. A
//!   durable store admits a request in one turn (its appends only encode into a buffer), so a
//!   group commit never covers half a request.
//! - A memory store sends a write as it is admitted; a durable store sends it after the group
//!   commit that made it durable (see `state.rs`).
//! - When the client has given up or lost its name, every later write, and every write still
//!   waiting, is refused ([`PublishError::GaveUp`], [`PublishError::NameInUse`]).
//!
//! A refusal goes back to the caller that awaits the answer. Nobody awaits a `do_send`: its
//! refused writes are reported as [`FailedWrite`](crate::client::FailedWrite)s with
//! [`LocalReason::Rejected`](crate::client::LocalReason::Rejected) and sequence 0.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::encode::{encode, encode_unstored};
use super::state::{
    copy_store_error, Outcome, PublishState, Stopped, Uncommitted, WriteMode, WriteResult,
};
use super::StoredMessage;
use crate::client::config::FullPolicy;
use crate::client::internal::NewWrite;
use crate::error::{PublishError, SizeLimit, StoreError};

/// Most writes admitted per turn by a memory store.
const ADMIT_SLICE: usize = 64;

/// Header fields cost at most a few hundred bytes beyond the variable parts of a write.
const HEADER_ALLOWANCE: usize = 256;

/// A request waiting for room (or part-way through admission).
#[derive(Debug)]
pub(super) struct Request<W> {
    writes: VecDeque<NewWrite>,
    cid: Option<String>,
    mode: WriteMode,
    reply: Option<W>,
    first: Option<u64>,
    last: u64,
    /// Weight of the writes not yet admitted.
    weight: usize,
}

/// Which request the next [`PublishState::attach`] belongs to.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Waiting,
    Uncommitted,
}

/// Writes waiting for room.
#[derive(Debug)]
pub(crate) struct Admission<W> {
    waiting: VecDeque<Request<W>>,
    /// Writes in `waiting` (not yet stored).
    pub waiting_writes: usize,
    /// A `ResumeLater` is queued.
    pub resume_scheduled: bool,
    /// The result of an awaited request that completed before its reply was attached.
    pub unattached: Option<WriteResult>,
    slot: Option<Slot>,
}

impl<W> Default for Admission<W> {
    fn default() -> Self {
        Admission {
            waiting: VecDeque::new(),
            waiting_writes: 0,
            resume_scheduled: false,
            unattached: None,
            slot: None,
        }
    }
}

impl<W> Admission<W> {
    /// Where the reply of the request just left pending goes.
    pub(super) fn attach_slot<'a>(
        &'a mut self,
        uncommitted: &'a mut [Uncommitted<W>],
    ) -> Option<&'a mut Option<W>> {
        match self.slot.take()? {
            Slot::Waiting => self.waiting.back_mut().map(|r| &mut r.reply),
            Slot::Uncommitted => uncommitted.last_mut().map(|u| &mut u.reply),
        }
    }
}

/// A copy of a refusal for one more caller (the refusals used here carry no I/O error).
fn clone_stop_error(e: &PublishError) -> PublishError {
    match e {
        PublishError::GaveUp { reason } => PublishError::GaveUp {
            reason: reason.clone(),
        },
        PublishError::NameInUse => PublishError::NameInUse,
        _ => PublishError::Stopped,
    }
}

/// What a write will weigh once stored (see [`StoredMessage::weight`]).
fn write_weight(w: &NewWrite) -> usize {
    super::weight(&w.topic, &w.data, w.options.as_deref())
}

/// A write as a stored message with sequence 0 (for reporting one that was never stored).
fn unstored_message(w: NewWrite) -> StoredMessage {
    StoredMessage {
        seq: 0,
        operation: w.operation,
        topic: w.topic.into_arc(),
        data: w.data,
        options: w.options,
    }
}

impl<W, F> PublishState<W, F> {
    fn validate(&self, w: &NewWrite) -> Result<(), PublishError> {
        if w.topic.is_empty() {
            return Err(PublishError::EmptyTopic);
        }
        let weight = write_weight(w);
        let size = weight + HEADER_ALLOWANCE;
        if size > self.limits.max_frame {
            return Err(PublishError::TooLarge {
                limit: SizeLimit::MaxFrame,
                size,
                max: self.limits.max_frame,
            });
        }
        if self.store.is_some() && weight > self.limits.max_bytes {
            return Err(PublishError::TooLarge {
                limit: SizeLimit::StoreBytes,
                size: weight,
                max: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Whether `count` more writes of `weight` bytes fit the store now.
    fn fits(&self, count: usize, weight: usize) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        store.len() + count <= self.limits.max_messages
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

    /// Refuses a request that was never stored: `Err` to an awaiting caller, a local failure
    /// per write otherwise.
    fn refuse(
        &mut self,
        writes: impl IntoIterator<Item = NewWrite>,
        mode: WriteMode,
        err: PublishError,
        now: Instant,
    ) -> Outcome {
        match mode {
            WriteMode::Awaited => Outcome::Done(Err(err)),
            WriteMode::Reported => {
                let err = Arc::new(err);
                for w in writes {
                    self.report_rejected(unstored_message(w), err.clone(), now);
                }
                // The shell ignores the outcome of a reported request.
                Outcome::Done(Ok(None))
            }
        }
    }

    /// A write request (see the module docs). `cid`: the command id of a sow_delete whose
    /// caller waits for its stats. An [`Outcome::Pending`] awaited request needs its reply
    /// attached at once with [`PublishState::attach`].
    pub fn write(
        &mut self,
        writes: Vec<NewWrite>,
        cid: Option<String>,
        mode: WriteMode,
        now: Instant,
    ) -> Outcome {
        if let Some(stop) = &self.stopped {
            let err = stop.error();
            return self.refuse(writes, mode, err, now);
        }
        if let Err(e) = writes.iter().try_for_each(|w| self.validate(w)) {
            return self.refuse(writes, mode, e, now);
        }
        if writes.is_empty() {
            return Outcome::Done(Ok(None));
        }
        if self.store.is_none() {
            if self.live.is_none() {
                return self.refuse(writes, mode, PublishError::NotConnected, now);
            }
            for w in &writes {
                encode_unstored(w, cid.as_deref(), &mut self.out);
            }
            self.counts.published += writes.len() as u64;
            self.signal_outbound();
            return Outcome::Done(Ok(None));
        }
        let count = writes.len();
        let weight: usize = writes.iter().map(write_weight).sum();
        if count > self.limits.max_messages || weight > self.limits.max_bytes {
            let err = PublishError::BatchOverCapacity {
                messages: count,
                bytes: weight,
                max_messages: self.limits.max_messages,
                max_bytes: self.limits.max_bytes,
            };
            return self.refuse(writes, mode, err, now);
        }
        let room_now = self.admission.waiting.is_empty() && self.fits(count, weight);
        if self.limits.when_full == FullPolicy::Error && !room_now {
            let err = self.full_error();
            return self.refuse(writes, mode, err, now);
        }
        // The common case: room now, and small enough for one turn.
        if room_now && (self.durable || count <= ADMIT_SLICE) {
            let mut cid = cid;
            let (mut first, mut last) = (None, 0);
            let mut writes = VecDeque::from(writes);
            while let Some(w) = writes.pop_front() {
                let attempted = self.next_seq;
                match self.admit_one(w, cid.take()) {
                    Ok(seq) => {
                        first.get_or_insert(seq);
                        last = seq;
                    }
                    Err(e) => {
                        let from = first.unwrap_or(attempted);
                        let err = self.admission_failed(from, mode, e, now);
                        if mode == WriteMode::Reported {
                            self.report_unadmitted(writes, &err, now);
                        }
                        return match mode {
                            WriteMode::Awaited => Outcome::Done(Err(err)),
                            // Reported above, write by write; the shell ignores this outcome.
                            WriteMode::Reported => Outcome::Done(Ok(None)),
                        };
                    }
                }
            }
            let first = first.unwrap_or(last);
            if !self.durable {
                return Outcome::Done(Ok(Some((first, last))));
            }
            self.uncommitted.push(Uncommitted {
                mode,
                reply: None,
                first,
                last,
            });
            self.schedule_commit();
            if mode == WriteMode::Awaited {
                self.admission.slot = Some(Slot::Uncommitted);
            }
            return Outcome::Pending;
        }
        self.admission.waiting_writes += count;
        self.admission.waiting.push_back(Request {
            writes: writes.into(),
            cid,
            mode,
            reply: None,
            first: None,
            last: 0,
            weight,
        });
        if mode == WriteMode::Awaited {
            self.admission.slot = Some(Slot::Waiting);
        }
        self.admit_waiting(now);
        if mode == WriteMode::Awaited && self.durable && self.admission.waiting.is_empty() {
            // Admitted at once after all (room had come back, its resume not run yet; found by
            // the model test with asynchronous syncs): it is the last request stored, so its
            // reply goes there. (A refusal went to `unattached`, which `attach` takes first.)
            self.admission.slot = Some(Slot::Uncommitted);
        }
        Outcome::Pending
    }

    /// One write (the per-message path): the same rules as [`PublishState::write`], without
    /// a request to build when the write can be admitted at once into a memory store. (The
    /// shell calls [`PublishState::write_one_at_once`] itself, to read the clock only when
    /// needed; the model test drives this.)
    #[cfg(test)]
    pub fn write_one(&mut self, w: NewWrite, mode: WriteMode, now: Instant) -> Outcome {
        match self.write_one_at_once(w, mode, || now) {
            Ok(outcome) => outcome,
            Err(w) => self.write(vec![w], None, mode, now),
        }
    }

    /// The common case of [`PublishState::write_one`]: a valid write that fits a memory store
    /// now, admitted without reading the clock (`now` is only called if the append fails).
    /// `Err` gives the write back when it needs the general path.
    pub fn write_one_at_once(
        &mut self,
        w: NewWrite,
        mode: WriteMode,
        now: impl FnOnce() -> Instant,
    ) -> Result<Outcome, NewWrite> {
        let at_once = self.stopped.is_none()
            && self.store.is_some()
            && !self.durable
            && self.admission.waiting.is_empty()
            && self.validate(&w).is_ok()
            && self.fits(1, write_weight(&w));
        if !at_once {
            return Err(w);
        }
        let seq = self.next_seq;
        Ok(match self.admit_one(w, None) {
            Ok(seq) => Outcome::Done(Ok(Some((seq, seq)))),
            Err(e) => {
                let err = self.admission_failed(seq, mode, e, now());
                match mode {
                    WriteMode::Awaited => Outcome::Done(Err(err)),
                    // A memory store's append only fails on a numbering bug; nothing is left
                    // to report but the log line `admission_failed` wrote.
                    WriteMode::Reported => Outcome::Done(Ok(None)),
                }
            }
        })
    }

    /// One write that never waits: refused with `Err` (never stored, never sent) when the
    /// store is full or anything waits for room, whatever the [`FullPolicy`]; otherwise
    /// admitted as [`PublishState::write_one`] does. A memory store (or none) answers at once.
    /// A durable store admits it as a reported write: `Ok(Some(seq))` now, durable and sent
    /// after the group commit; a commit or append that fails later reports it as a
    /// [`FailedWrite`](crate::client::FailedWrite) (`Ok(None)` when that happened during this
    /// call), as for `do_send`.
    ///
    /// `now` is called only if an event needs the time (the common case reads no clock).
    pub fn try_write_one(&mut self, w: NewWrite, now: impl Fn() -> Instant) -> WriteResult {
        if let Some(stop) = &self.stopped {
            return Err(stop.error());
        }
        self.validate(&w)?;
        if self.store.is_some()
            && (!self.admission.waiting.is_empty() || !self.fits(1, write_weight(&w)))
        {
            return Err(self.full_error());
        }
        if !self.durable {
            let outcome = match self.write_one_at_once(w, WriteMode::Awaited, &now) {
                Ok(outcome) => outcome,
                // No store: the general path (it sends at once or refuses).
                Err(w) => self.write(vec![w], None, WriteMode::Awaited, now()),
            };
            return match outcome {
                Outcome::Done(r) => r,
                // Unreachable: an awaited write with room in a memory store is answered now.
                Outcome::Pending => Err(PublishError::Stopped),
            };
        }
        let seq = self.next_seq;
        match self.write(vec![w], None, WriteMode::Reported, now()) {
            Outcome::Pending => Ok(Some((seq, seq))),
            Outcome::Done(_) => Ok(None),
        }
    }

    /// Bytes encoded for the live connection and not yet handed over.
    pub fn outbound_len(&self) -> usize {
        self.out.len()
    }

    /// Whether the last events left effects for the shell to carry out.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// Continues admission of waiting writes (after a `ResumeLater`).
    pub fn resume(&mut self, now: Instant) {
        self.admission.resume_scheduled = false;
        self.admit_waiting(now);
        self.check_flushes();
    }

    /// Schedules admission for a later turn if any write waits (after an ack freed room).
    pub(super) fn admit_later(&mut self) {
        if !self.admission.waiting.is_empty() && self.stopped.is_none() {
            self.schedule_resume();
        }
    }

    pub(super) fn schedule_resume(&mut self) {
        if !self.admission.resume_scheduled {
            self.admission.resume_scheduled = true;
            self.effects.push(super::state::Effect::ResumeLater);
        }
    }

    /// Admits waiting requests, in order, while each fits whole; answers each once all of it
    /// is stored (a durable store: once committed).
    pub(super) fn admit_waiting(&mut self, now: Instant) {
        if self.admission.waiting.is_empty() || self.stopped.is_some() {
            return;
        }
        let mut budget = ADMIT_SLICE;
        loop {
            let Some(front) = self.admission.waiting.front() else {
                return;
            };
            let started = front.first.is_some();
            if !started && !self.fits(front.writes.len(), front.weight) {
                return;
            }
            if !self.durable && budget == 0 {
                self.schedule_resume();
                return;
            }
            let Some(mut req) = self.admission.waiting.pop_front() else {
                return;
            };
            while let Some(w) = req.writes.pop_front() {
                self.admission.waiting_writes -= 1;
                req.weight = req.weight.saturating_sub(write_weight(&w));
                let attempted = self.next_seq;
                match self.admit_one(w, req.cid.take()) {
                    Ok(seq) => {
                        req.first.get_or_insert(seq);
                        req.last = seq;
                    }
                    Err(e) => {
                        self.admission.waiting_writes -= req.writes.len();
                        let from = req.first.unwrap_or(attempted);
                        let err = self.admission_failed(from, req.mode, e, now);
                        match req.mode {
                            WriteMode::Awaited => {
                                let reply = req.reply.take();
                                self.answer(req.mode, reply, Err(err))
                            }
                            WriteMode::Reported => {
                                let rest = std::mem::take(&mut req.writes);
                                self.report_unadmitted(rest, &err, now);
                            }
                        }
                        req.first = None;
                        break;
                    }
                }
                budget = budget.saturating_sub(1);
                if !self.durable && budget == 0 && !req.writes.is_empty() {
                    // A time slice: the rest continues on a later turn, so an ack queued behind
                    // this batch is not held up by all of it.
                    self.admission.waiting.push_front(req);
                    self.schedule_resume();
                    return;
                }
            }
            if let Some(first) = req.first.filter(|_| req.writes.is_empty()) {
                if self.durable {
                    self.uncommitted.push(Uncommitted {
                        mode: req.mode,
                        reply: req.reply.take(),
                        first,
                        last: req.last,
                    });
                    self.schedule_commit();
                } else {
                    let reply = req.reply.take();
                    self.answer(req.mode, reply, Ok(Some((first, req.last))));
                }
            }
        }
    }

    /// Stores one write (room already checked); a memory store also queues it for sending.
    fn admit_one(&mut self, w: NewWrite, cid: Option<String>) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let topic = match &self.last_topic {
            Some(t) if w.topic.ptr_eq(t) || **t == *w.topic => t.clone(),
            _ => {
                let t: Arc<str> = w.topic.into_arc();
                self.last_topic = Some(t.clone());
                t
            }
        };
        let msg = StoredMessage {
            seq,
            operation: w.operation,
            topic,
            data: w.data,
            options: w.options,
        };
        let mark = self.out.len();
        let send_now = !self.durable && self.live.is_some();
        if send_now {
            encode(
                msg.view(),
                cid.as_deref(),
                &mut self.out,
                &mut self.template,
            );
        }
        if let Some(store) = &mut self.store {
            if let Err(e) = store.append(msg) {
                self.out.truncate(mark);
                // A store that took the number anyway (an append whose write failed) keeps it
                // used up; it is retracted by the caller.
                if store.last_assigned() >= seq {
                    self.next_seq = seq + 1;
                }
                return Err(e);
            }
        }
        self.first_own.get_or_insert(seq);
        if !self.durable {
            self.committed_through = seq;
        }
        if send_now {
            self.out_highest = seq;
            self.signal_outbound();
        }
        if let Some(cid) = cid {
            self.waited.insert(seq, cid);
        }
        self.next_seq += 1;
        self.counts.published += 1;
        Ok(seq)
    }

    /// A store append failed part-way through a request whose first stored sequence is
    /// `first`: nothing of it may stay. A durable store retracts the request (and every
    /// request waiting for the same commit, none of them sent yet) and all are refused; a
    /// reported request's writes are reported as local failures. Returns the error for the
    /// request itself.
    fn admission_failed(
        &mut self,
        from: u64,
        mode: WriteMode,
        e: StoreError,
        now: Instant,
    ) -> PublishError {
        tracing::error!(error = %e, "publish store append failed; the request is refused");
        if self.durable {
            let reported: Vec<StoredMessage> = match (mode, &self.store) {
                (WriteMode::Reported, Some(store)) => {
                    store.iter_from(from).map(StoredMessage::from).collect()
                }
                _ => Vec::new(),
            };
            self.refuse_uncommitted(&e, now);
            self.retract(from);
            let err = Arc::new(PublishError::Store(copy_store_error(&e)));
            for mut m in reported {
                m.seq = 0;
                self.report_rejected(m, err.clone(), now);
            }
        }
        PublishError::Store(e)
    }

    /// Reports the writes of a refused request that were never stored (nobody awaits it).
    fn report_unadmitted(
        &mut self,
        writes: impl IntoIterator<Item = NewWrite>,
        err: &PublishError,
        now: Instant,
    ) {
        let err = Arc::new(PublishError::Store(StoreError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(err.to_string()),
        }));
        for w in writes {
            self.report_rejected(unstored_message(w), err.clone(), now);
        }
    }

    /// Refuses every waiting request (the client stopped).
    pub(super) fn reject_waiting(&mut self, stop: &Stopped, now: Instant) {
        let err = stop.error();
        self.reject_waiting_with(err, now);
    }

    /// Refuses every waiting request with `err`. A request part-way through admission (a big
    /// batch in a memory store) is finished first: it cannot be half stored.
    pub(super) fn reject_waiting_with(&mut self, err: PublishError, now: Instant) {
        if self
            .admission
            .waiting
            .front()
            .is_some_and(|r| r.first.is_some())
        {
            let stopped = self.stopped.take();
            // Finish the started request regardless of the time slice.
            while self
                .admission
                .waiting
                .front()
                .is_some_and(|r| r.first.is_some())
            {
                self.admit_waiting(now);
            }
            self.stopped = stopped;
        }
        let err = Arc::new(err);
        for req in std::mem::take(&mut self.admission.waiting) {
            match req.mode {
                WriteMode::Awaited => {
                    let e = clone_stop_error(&err);
                    self.answer(req.mode, req.reply, Err(e))
                }
                WriteMode::Reported => {
                    for w in req.writes {
                        self.report_rejected(unstored_message(w), err.clone(), now);
                    }
                }
            }
        }
        self.admission.waiting_writes = 0;
    }
}
