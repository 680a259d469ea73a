//! How a publish store stops taking part: a lost connection, giving up, losing the client name,
//! a graceful close, the process stopping.
//!
//! - **Connection lost**: nothing is decided; the replay after the next logon re-sends what is
//!   held, and an unfinished read proof is carried there.
//! - **Gave up** (no logon within the maximum retry time, refused credentials): pending flushes
//!   and writes waiting for room fail; stored writes stay (a file store keeps them for the next
//!   process).
//! - **Name lost** (another connection logged on with this client name): stop for good and
//!   account for every unacknowledged write (see [`PublishState::name_lost`]).
//! - **Close** (a graceful `Shutdown`): finish the read proof, then nothing more is obeyed.
//! - **Stop**: writes still waiting are refused, everything stored is made durable.

use std::time::Instant;

use super::state::{Effect, PublishState, Stopped};
use super::StoredMessage;
use crate::client::messages::LocalReason;
use crate::error::{FlushError, PublishError};

impl<W, F> PublishState<W, F> {
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
    pub fn gave_up(&mut self, reason: crate::error::GiveUpReason, now: Instant) {
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
        // Every stored write is settled first (waits for the sync in flight, if any): what
        // follows reports or keeps each of them.
        self.settle_all(now);
        let stop = Stopped::NameLost;
        self.reject_waiting(&stop, now);
        self.stopped = Some(stop);
        self.book.clear_limbo();
        self.waited.clear();
        let held: Vec<StoredMessage> = self
            .store
            .as_ref()
            .map(|s| s.iter().map(StoredMessage::from).collect())
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
        self.settle_all(now);
        self.reject_waiting_with(PublishError::Stopped, now);
        // Publisher handles outlive the actors: their later writes are refused, not stored
        // where nothing would send them.
        self.stopped.get_or_insert(Stopped::Shutdown);
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
