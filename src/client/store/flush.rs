//! `PublishFlush` bookkeeping, the one flush command in flight, and the read proof.
//!
//! A [`PublishFlush`](crate::client::PublishFlush) records a **target**: the highest sequence
//! stored (or waiting for room) before it. It resolves when the store holds nothing at or below
//! the target (every write before it is persisted or reported failed) and the server has
//! answered a `flush` command sent after the request began.
//!
//! **At most one `flush` command is in flight** on a connection. That is what makes the read
//! proof work (`docs/ACCOUNTING.md`): when the server receives flush `k+1` it knows the client
//! had read the ack of flush `k`, and so every frame the server wrote before that ack, failure
//! acks included. The client therefore owes the server a proof after reading a failure ack:
//! after the first flush ack that follows the failure, one more flush. [`ReadProof`] tracks
//! that debt; a graceful shutdown pays it before closing.
//!
//! Flush commands are numbered (generations). A request needs the ack of a command sent after
//! it began, so of generation `>= needs_gen`; an ack of generation `g` satisfies every request
//! with `needs_gen <= g`.

use std::time::Instant;

use super::encode::encode_flush;
use super::state::{Effect, FlushAck, PublishState, Stopped};
use crate::error::FlushError;
use crate::protocol::AckType;

/// A pending `PublishFlush`.
#[derive(Debug)]
pub(super) struct PendingFlush<F> {
    pub id: u64,
    /// Everything `<= target` must be acknowledged.
    pub target: u64,
    /// The generation of flush command whose ack this request needs at least.
    pub needs_gen: u64,
    /// A satisfying flush ack arrived.
    pub acked: bool,
    pub started: Instant,
    pub reply: F,
}

/// The flush command in flight.
#[derive(Debug, Clone)]
pub(super) struct Inflight {
    pub cid: String,
    pub gen: u64,
}

/// The debt of flush commands owed to prove failure acks were read (see the module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadProof {
    /// A failure ack was read; after the next flush ack, one more flush is owed.
    after_next_ack: bool,
    /// A flush is owed now.
    now: bool,
    /// A connection was lost before its proof was complete: the server re-sends what it did
    /// not see proven after the next logon, and the proof starts over there.
    carried: bool,
}

impl ReadProof {
    /// A failure ack was read. With no flush in flight one is owed at once (its ack will follow
    /// the failure), and another after that ack.
    pub fn failure_read(&mut self, flush_in_flight: bool) {
        self.after_next_ack = true;
        if !flush_in_flight {
            self.now = true;
        }
    }

    /// A flush ack arrived.
    pub fn ack_read(&mut self) {
        if std::mem::take(&mut self.after_next_ack) {
            self.now = true;
        }
    }

    /// Whether a flush command must be sent now.
    pub fn owed_now(&self) -> bool {
        self.now
    }

    /// A flush command was sent.
    pub fn flush_sent(&mut self) {
        self.now = false;
    }

    /// Whether every failure read so far is proven once the flush in flight (if any) arrives.
    pub fn settled(&self) -> bool {
        !self.now && !self.after_next_ack
    }

    /// A failure was read from a connection that is already gone: the proof is owed on the
    /// next connection.
    pub fn carry(&mut self) {
        self.carried = true;
    }

    /// Whether a lost connection left a proof unfinished.
    pub fn carried(&self) -> bool {
        self.carried
    }
}

/// Every pending flush and the command in flight.
#[derive(Debug)]
pub(super) struct Flushes<F> {
    /// In the order they began (targets never decrease).
    pub pending: Vec<PendingFlush<F>>,
    pub inflight: Option<Inflight>,
    /// The generation of the next flush command.
    pub next_gen: u64,
    pub proof: ReadProof,
    next_id: u64,
    next_cid: u64,
    /// A graceful shutdown waits for the proof to be settled.
    pub closing: bool,
}

impl<F> Default for Flushes<F> {
    fn default() -> Self {
        Flushes {
            pending: Vec::new(),
            inflight: None,
            next_gen: 1,
            proof: ReadProof::default(),
            next_id: 0,
            next_cid: 0,
            closing: false,
        }
    }
}

impl<F> Flushes<F> {
    /// Records a request; returns its id.
    pub fn begin(&mut self, target: u64, started: Instant, reply: F) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.pending.push(PendingFlush {
            id,
            target,
            needs_gen: self.next_gen,
            acked: false,
            started,
            reply,
        });
        id
    }

    /// Whether a flush command should be sent now (there is none in flight).
    pub fn command_wanted(&self) -> bool {
        self.inflight.is_none() && (self.proof.owed_now() || self.pending.iter().any(|f| !f.acked))
    }

    /// Starts a flush command; returns its command id.
    pub fn command_sent(&mut self) -> String {
        self.next_cid += 1;
        let cid = format!("flush-{}", self.next_cid);
        self.inflight = Some(Inflight {
            cid: cid.clone(),
            gen: self.next_gen,
        });
        self.next_gen += 1;
        self.proof.flush_sent();
        cid
    }

    /// The ack of command `cid` arrived (success or a refusal). Returns whether it was the
    /// command in flight.
    pub fn ack_arrived(&mut self, cid: &str, success: bool) -> bool {
        let Some(inflight) = self.inflight.take_if(|f| f.cid == cid) else {
            return false;
        };
        self.proof.ack_read();
        if success {
            for f in &mut self.pending {
                if f.needs_gen <= inflight.gen {
                    f.acked = true;
                }
            }
        }
        true
    }

    /// The connection is gone: the command in flight will not be answered, and what it read
    /// can no longer be proven on it. If anything was left unproven (or unconfirmed: the
    /// proving flush's ack, which comes once the proof is durable, had not arrived), the proof
    /// is carried to the next connection.
    pub fn connection_lost(&mut self) {
        let unfinished = !self.close_ready() || self.proof.carried;
        self.inflight = None;
        self.proof = ReadProof {
            carried: unfinished,
            ..ReadProof::default()
        };
    }

    /// A connection logged on. A carried proof starts over: the failures the server re-sends
    /// right after the logon come before the ack of a flush sent now, and the flush after that
    /// ack proves them.
    pub fn connection_up(&mut self) {
        if std::mem::take(&mut self.proof.carried) {
            self.proof.failure_read(self.inflight.is_some());
        }
    }

    /// Removes the request `id`.
    pub fn take(&mut self, id: u64) -> Option<PendingFlush<F>> {
        let i = self.pending.iter().position(|f| f.id == id)?;
        Some(self.pending.remove(i))
    }

    /// Whether a graceful close may proceed: nothing owed, nothing in flight.
    pub fn close_ready(&self) -> bool {
        self.proof.settled() && self.inflight.is_none() && !self.proof.carried
    }
}

impl<W, F> PublishState<W, F> {
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
        // The flush goes after every durable write, not between the slices of a batch: its
        // ack then covers them and the flush needs no later conflated ack. While slices are
        // still to go, the last one sends it (`send_durable`), rather than this turn encoding
        // the rest of the batch (a failure ack's turn must stay short).
        if self.sent_through < self.committed_through && self.durable {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_read_with_no_flush_in_flight_costs_two_flushes() {
        let mut f: Flushes<()> = Flushes::default();
        f.proof.failure_read(false);
        assert!(f.command_wanted());
        let c1 = f.command_sent();
        assert!(!f.command_wanted() && !f.close_ready());
        assert!(f.ack_arrived(&c1, true));
        assert!(
            f.command_wanted(),
            "the ack of the first proves nothing yet"
        );
        let c2 = f.command_sent();
        assert!(f.ack_arrived(&c2, true));
        assert!(!f.command_wanted() && f.close_ready());
    }

    #[test]
    fn a_failure_read_while_a_flush_is_in_flight_costs_one_more() {
        let mut f: Flushes<()> = Flushes::default();
        f.begin(10, Instant::now(), ());
        let c1 = f.command_sent();
        f.proof.failure_read(true);
        assert!(!f.command_wanted());
        assert!(f.ack_arrived(&c1, true));
        assert!(f.pending[0].acked);
        assert!(f.command_wanted());
        let c2 = f.command_sent();
        assert!(!f.ack_arrived("flush-stale", true));
        assert!(f.ack_arrived(&c2, true));
        assert!(f.close_ready());
    }

    #[test]
    fn a_request_needs_a_command_sent_after_it() {
        let mut f: Flushes<()> = Flushes::default();
        f.begin(1, Instant::now(), ());
        let c1 = f.command_sent();
        f.begin(2, Instant::now(), ());
        assert!(f.ack_arrived(&c1, true));
        assert!(f.pending[0].acked && !f.pending[1].acked);
        assert!(f.command_wanted());
        let c2 = f.command_sent();
        f.connection_lost();
        assert!(!f.ack_arrived(&c2, true), "lost with its connection");
        assert!(f.command_wanted());
    }

    #[test]
    fn an_unfinished_proof_is_carried_to_the_next_connection() {
        let mut f: Flushes<()> = Flushes::default();
        f.proof.failure_read(false);
        let c1 = f.command_sent();
        assert!(f.ack_arrived(&c1, true));
        let _c2 = f.command_sent();
        // Lost before the proving flush's ack: not known durable.
        f.connection_lost();
        assert!(!f.close_ready(), "a close waits for the next connection");
        f.connection_up();
        assert!(f.command_wanted());
        let c3 = f.command_sent();
        assert!(f.ack_arrived(&c3, true));
        let c4 = f.command_sent();
        assert!(f.ack_arrived(&c4, true));
        assert!(f.close_ready());
        // A connection lost with nothing to prove carries nothing.
        f.connection_lost();
        assert!(f.close_ready());
    }

    #[test]
    fn a_failure_read_from_a_connection_already_gone_is_proven_on_the_next() {
        let mut f: Flushes<()> = Flushes::default();
        // The loss reached the store before the failure acks that connection had delivered.
        f.connection_lost();
        assert!(f.close_ready());
        f.proof.carry();
        assert!(!f.close_ready(), "a close waits for the next connection");
        f.connection_up();
        let c1 = f.command_sent();
        assert!(f.ack_arrived(&c1, true));
        assert!(
            !f.close_ready(),
            "the flush after the first ack proves the re-sent failures"
        );
        let c2 = f.command_sent();
        assert!(f.ack_arrived(&c2, true));
        assert!(f.close_ready());
    }
}
