//! Persisted acks: checked before they are obeyed, then a success discards and a failure is
//! enriched and reported.
//!
//! - **Distrust.** An ack above the highest sequence ever assigned, or a success below an
//!   earlier ack on the same connection, is a protocol violation: it is ignored, later acks of
//!   that connection too, and the connection is closed and re-established (the store keeps every
//!   message for the replay). A *failure* below an earlier ack is legitimate: refusals nobody
//!   demonstrably read are re-sent after a logon, and a replayed message may be refused again.
//! - **Success** for `N` discards everything `<= N` (and empties limbo: no re-sent failure
//!   follows a success on a connection).
//! - **Failure** for `N` is looked up (the store, limbo, the reported set: `failures.rs`),
//!   discards `<= N`, and is reported once, flagged when it was a predecessor's write. Reading
//!   it starts the read proof (`flush.rs`).

use std::time::Instant;

use super::failures::Lookup;
use super::state::{Effect, PublishState};
use crate::client::messages::{FailedWrite, FailureSource, UnexpectedKind, UnexpectedMessage};
use crate::error::ProtocolError;
use crate::protocol::{Frame, Header, Reason, Status};

impl<W, F> PublishState<W, F> {
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
            } else {
                // Read from a connection already gone (its acks reach the store after the
                // loss): it can no longer be proven there, so the proof is owed on the next
                // one, and a graceful close waits for it (chaos seed 15: a close that ended at
                // once let the next process hear these failures again).
                self.flushes.proof.carry();
                self.check_close();
            }
        } else if self.store.is_some() {
            self.on_success(seq);
        } else {
            self.effects.push(Effect::Unexpected(UnexpectedMessage {
                kind: UnexpectedKind::Unclaimed,
                frame: Frame::header_only(ack),
            }));
        }
        // The room the ack freed is taken on a later turn: a failure must not wait behind
        // the encoding of the writes it lets in (64 per ack, a whole batch for a durable
        // store), and a burst of acks then admits once, not once per ack.
        self.admit_later();
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
        let stored = self
            .store
            .as_ref()
            .and_then(|s| s.get(seq).map(|m| m.to_message()));
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
        let predecessor = self.count_reported_failure(seq);
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

    pub(super) fn forget_waited_from(&mut self, from: u64) {
        if !self.waited.is_empty() {
            self.waited.split_off(&from);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::super::state::{Effect, Limits, Outcome, PublishState, WriteMode};
    use super::super::sync_tests::effects;
    use super::super::{MemoryStore, Operation};
    use crate::client::config::FullPolicy;
    use crate::client::internal::NewWrite;
    use crate::protocol::{AckType, AckTypes, Command, Header, Reason, Status};

    fn ack(seq: u64, status: Status) -> Header {
        Header {
            command: Some(Command::Ack),
            ack_type: AckTypes::only(AckType::Persisted),
            reason: (status == Status::Failure).then_some(Reason::NotEntitled),
            status: Some(status),
            seq: Some(seq),
            ..Header::default()
        }
    }

    /// An ack is handled in a turn of its own: the writes waiting behind a big batch are
    /// admitted on the later turn it schedules, never inside the ack's turn, so a failure is
    /// reported without waiting for their encoding.
    #[test]
    fn an_ack_reports_before_admitting_the_writes_waiting_for_room() {
        let limits = Limits {
            max_messages: 10_000,
            max_bytes: 1 << 24,
            when_full: FullPolicy::Wait,
            max_frame: 1 << 20,
            error_on_publish_gap: false,
        };
        let mut s: PublishState<u64, u64> =
            PublishState::new(Some(Box::new(MemoryStore::new())), limits, 1);
        s.logged_on(1, 0, Instant::now()).unwrap();
        let writes = (0..1000)
            .map(|i| NewWrite {
                operation: Operation::Publish,
                topic: "t".into(),
                data: Bytes::from(format!("m{i}")),
                options: None,
            })
            .collect();
        let outcome = s.write(writes, None, WriteMode::Awaited, Instant::now());
        assert!(matches!(outcome, Outcome::Pending), "{outcome:?}");
        s.attach(7);
        let first_slice = s.store_len();
        assert!(first_slice > 0 && first_slice < 1000, "{first_slice}");
        assert!(effects(&mut s)
            .iter()
            .any(|e| matches!(e, Effect::ResumeLater)));

        s.ack(1, ack(1, Status::Failure), Instant::now());
        let after_failure = effects(&mut s);
        assert!(
            after_failure
                .iter()
                .any(|e| matches!(e, Effect::Failed(f) if f.sequence == 1)),
            "the failure is reported in the ack's turn"
        );
        assert_eq!(
            s.store_len(),
            first_slice - 1,
            "nothing admitted in the ack's turn"
        );
        s.ack(1, ack(10, Status::Success), Instant::now());
        assert_eq!(s.store_len(), first_slice - 10, "nor in a success's");

        // The resume that was already scheduled admits the next slice, and keeps going.
        let mut turns = 0;
        while s.stats().unacknowledged != s.store_len() as u64 {
            s.resume(Instant::now());
            turns += 1;
            assert!(turns < 1000, "admission never finished");
        }
        assert!(turns > 1, "admitted in slices, {turns} turn(s)");
        assert_eq!(s.store_len(), 990);
        assert_eq!(s.stats().failed, 1);
    }
}
