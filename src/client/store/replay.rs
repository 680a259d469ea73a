//! What a logon does to the store: discard, keep for late failures, report conflicts, replay.
//!
//! The logon ack carries the server's last sequence `L` for this client name. Then, in order:
//! 1. Writes waiting for a group commit are committed first, so that every stored message is
//!    either durable or refused before anything is decided about it.
//! 2. With `error_on_publish_gap`, `L` below what the store already saw acknowledged refuses
//!    the logon (the server lost messages).
//! 3. Every stored message `<= L` is discarded: the server has it. Those this process (or a
//!    predecessor) sent go to **limbo** (`failures.rs`), because the server may still send the
//!    failure of one of them: a refusal nobody demonstrably read is re-sent right after the
//!    logon ack. Those that were **never sent** cannot be on the server: another publisher
//!    used the client name (or a clock went back). They are reported failed with
//!    [`LocalReason::SequenceConflict`] rather than discarded silently.
//! 4. Numbering continues above `L`, and the store records `L` as its discard mark even when
//!    it held nothing to discard, so that a successor process on the same store numbers above
//!    it too.
//! 5. Everything still stored is re-sent in sequence order with its original fields (a
//!    sow_delete whose caller waits under its original command id), in chunks of about 1 MiB,
//!    before any new write; then the connection is live and pending flushes are re-sent.

use std::time::Instant;

use bytes::BytesMut;

use super::encode::encode;
use super::state::PublishState;
use super::StoredMessage;
use crate::client::messages::LocalReason;
use crate::error::ConnectError;

/// Replay is sent in chunks of about this many bytes.
const REPLAY_CHUNK: usize = 1 << 20;

impl<W, F> PublishState<W, F> {
    /// Connection `epoch` logged on; the server's last sequence is `server_last`. Returns how
    /// many messages were replayed, or the error that refuses the logon (publish gap).
    pub fn logged_on(
        &mut self,
        epoch: u64,
        server_last: u64,
        now: Instant,
    ) -> Result<usize, ConnectError> {
        self.commit_now(now);
        if server_last > self.committed_through && self.syncing.is_some() {
            // The server's last sequence covers writes not yet durable (another publisher
            // with this name, or a predecessor's numbers): settle them first, so each is
            // answered before it is judged (rare; the usual logon never waits).
            self.settle_all(now);
        }
        if self.store.is_some() {
            if self.limits.error_on_publish_gap && server_last < self.highest_persisted {
                return Err(ConnectError::PublishGap {
                    server_last,
                    discarded: self.highest_persisted,
                });
            }
            self.discard_at_logon(server_last, now);
        }
        self.forget_waited(server_last);
        self.next_seq = self.next_seq.max(server_last.saturating_add(1));
        // Anything still buffered belonged to an older connection; the replay re-sends it.
        self.clear_outbound();
        let replayed = self.replay();
        tracing::info!(
            server_last,
            replayed,
            "logged on; replayed the publish store"
        );
        self.live = Some(epoch);
        self.flushes.connection_up();
        self.pump_flush();
        self.admit_waiting(now);
        self.check_flushes();
        self.check_close();
        Ok(replayed)
    }

    fn discard_at_logon(&mut self, server_last: u64, now: Instant) {
        let Some(store) = &mut self.store else { return };
        let covered: Vec<StoredMessage> = store
            .iter()
            .take_while(|m| m.seq <= server_last)
            .map(StoredMessage::from)
            .collect();
        if covered.is_empty() {
            // Nothing to discard, but the mark still moves up to `server_last` and is made
            // durable: a later process on this store numbers its first writes from the mark,
            // and writes it numbers offline below the server's last would be refused as
            // sequence conflicts (found by the chaos test: a successor publishing before its
            // first logon, on a store whose predecessor only ever logged on).
            if server_last > store.last_discarded() {
                let marked = store.discard_durably(server_last);
                if let Err(e) = marked {
                    tracing::warn!(%e, "publish store could not record the server's last sequence");
                }
                self.highest_persisted = self.highest_persisted.max(server_last);
            }
            return;
        }
        let highest_sent = self.highest_sent;
        let (sent, never_sent): (Vec<_>, Vec<_>) =
            covered.into_iter().partition(|m| m.seq <= highest_sent);
        match store.discard_up_to(server_last) {
            Ok(n) => self.counts.persisted += (n - never_sent.len()) as u64,
            Err(e) => tracing::error!(%e, "publish store failed to discard at logon"),
        }
        self.highest_persisted = self.highest_persisted.max(server_last);
        self.book.keep_in_limbo(sent);
        for m in never_sent {
            tracing::error!(
                sequence = m.seq,
                server_last,
                "the server's last sequence covers a message that was never sent; reporting it failed"
            );
            self.report_local(m, LocalReason::SequenceConflict { server_last }, now);
        }
    }

    /// Queues every durable stored message for the connection that just logged on (taken by
    /// its writer before any later write); returns how many.
    fn replay(&mut self) -> usize {
        let Some(store) = &self.store else { return 0 };
        let mut replayed = 0;
        let mut chunk = BytesMut::with_capacity(REPLAY_CHUNK.min(store.bytes() + 4096));
        for m in store.iter() {
            if m.seq > self.committed_through {
                // Not durable yet (its sync is in flight or not started): the group commit that
                // makes it durable sends it.
                break;
            }
            let cid = self.waited.get(&m.seq).map(String::as_str);
            encode(m, cid, &mut chunk, &mut self.template);
            // Sent once the writer takes it (a connection lost first never had it).
            self.out_highest = self.out_highest.max(m.seq);
            replayed += 1;
            if chunk.len() >= REPLAY_CHUNK {
                self.out_queue.push_back(chunk.split().freeze());
            }
        }
        if !chunk.is_empty() {
            self.out_queue.push_back(chunk.freeze());
        }
        // Everything durable is in the replay: slices of a batch not sent yet are in it too.
        self.sent_through = self.committed_through;
        if replayed > 0 {
            self.signal_outbound();
        }
        replayed
    }
}
