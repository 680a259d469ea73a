//! Failure accounting on the server: durable refusals, and when a failure ack counts as read.
//!
//! # Durable refusals
//!
//! A write that carries a sequence, asks for a `persisted` ack and is refused leaves a
//! **refusal record** in the transaction log (client name, sequence, reason), and its failure
//! ack waits for that record to be durable, like a success ack waits for its write. Until the
//! failure is *demonstrably read* it stays in the client name's **unread** set, rebuilt from
//! the log on start, and every later logon of that client name re-sends it right after the
//! logon ack, before anything else. So a refusal survives a crash or a restart of the server at
//! any moment: the logon's last sequence may cover the refused sequence, and the re-sent
//! failure ack still reaches the client.
//!
//! # The read rule (`docs/ACCOUNTING.md`)
//!
//! The server learns what a client read only from standard frames, by one rule: **a flush
//! proves the previous flush.** A client that keeps at most one `flush` in flight sends flush
//! `k+1` only after reading the ack of flush `k`, and so everything the server wrote before
//! that ack. When flush `k+1` arrives, every failure ack written before the ack of flush `k`
//! is read. Nothing else counts: a clean close of the connection proves only that the
//! client's kernel took the bytes. (A client that pipelines flushes proves nothing this way:
//! its failures stay unread and are re-sent after its next logon.)
//!
//! A read failure leaves a **read record** in the log (client name, sequences), so a restarted
//! server does not re-send it either. The flush that proved it is answered only once that
//! record is durable: a client holding that flush ack knows the proof survives a crash.
//!
//! The unread set is bounded per client name ([`MAX_UNREAD_PER_CLIENT`]); past it the oldest
//! are dropped with a warning (a client that never proves anything, such as one that never
//! flushes, cannot grow the server's memory without bound).

use std::collections::{BTreeMap, HashMap};

use crate::protocol::Reason;

/// Most unread failures kept per client name.
pub(crate) const MAX_UNREAD_PER_CLIENT: usize = 100_000;

/// Most written-but-unproven failures a connection tracks.
const MAX_TRACKED: usize = 1 << 20;

/// Per client name: the failures not yet demonstrably read, by sequence.
#[derive(Debug, Default)]
pub(crate) struct Unread {
    by_client: HashMap<String, BTreeMap<u64, Reason>>,
}

impl Unread {
    /// Records a refusal.
    pub fn insert(&mut self, client: &str, seq: u64, reason: Reason) {
        let set = match self.by_client.get_mut(client) {
            Some(s) => s,
            None => self.by_client.entry(client.to_owned()).or_default(),
        };
        set.insert(seq, reason);
        if set.len() > MAX_UNREAD_PER_CLIENT {
            if let Some((dropped, _)) = set.pop_first() {
                tracing::warn!(
                    client,
                    sequence = dropped,
                    "too many unread failures for one client name; forgetting the oldest"
                );
            }
        }
    }

    /// Forgets failures that were read; returns those that were unread.
    pub fn remove(&mut self, client: &str, seqs: &[u64]) -> Vec<u64> {
        let Some(set) = self.by_client.get_mut(client) else {
            return Vec::new();
        };
        let removed = seqs
            .iter()
            .copied()
            .filter(|s| set.remove(s).is_some())
            .collect();
        if set.is_empty() {
            self.by_client.remove(client);
        }
        removed
    }

    /// Every unread failure as (client, seq, reason), for a snapshot.
    pub fn all(&self) -> impl Iterator<Item = (String, u64, String)> + '_ {
        self.by_client.iter().flat_map(|(client, set)| {
            set.iter()
                .map(move |(seq, r)| (client.clone(), *seq, r.as_str().to_owned()))
        })
    }

    /// The unread failures of `client`, in sequence order (re-sent after a logon).
    pub fn of(&self, client: &str) -> Vec<(u64, Reason)> {
        self.by_client
            .get(client)
            .map(|m| m.iter().map(|(s, r)| (*s, r.clone())).collect())
            .unwrap_or_default()
    }
}

/// One connection's record of the failure acks it wrote and the flushes it saw (rule 1).
#[derive(Debug, Default)]
pub(crate) struct ReadProof {
    /// Failures written and not yet proven read, each with the number of flush acks written
    /// before it.
    written: Vec<(u64, u64)>,
    flush_acks_written: u64,
    flushes_received: u64,
}

impl ReadProof {
    /// A failure ack for `seq` went into the output.
    pub fn failure_written(&mut self, seq: u64) {
        if self.written.len() >= MAX_TRACKED {
            // Left unread: re-sent after the next logon (the client ignores repeats).
            self.written.remove(0);
        }
        self.written.push((self.flush_acks_written, seq));
    }

    /// The (last) ack of a flush went into the output.
    pub fn flush_ack_written(&mut self) {
        self.flush_acks_written += 1;
    }

    /// A flush that will be answered arrived: returns the failures it proves read (those
    /// written before the ack of the previous flush), if that ack was written at all.
    pub fn flush_received(&mut self) -> Vec<u64> {
        self.flushes_received += 1;
        let k = self.flushes_received;
        if k < 2 || self.flush_acks_written < k - 1 {
            return Vec::new();
        }
        let before = k - 1;
        let proven: Vec<u64> = self
            .written
            .iter()
            .filter(|(tag, _)| *tag < before)
            .map(|(_, seq)| *seq)
            .collect();
        self.written.retain(|(tag, _)| *tag >= before);
        proven
    }

    /// Every failure written and not yet proven.
    #[cfg(test)]
    pub fn take_all(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.written)
            .into_iter()
            .map(|(_, seq)| seq)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_proves_what_came_before_the_previous_flush_ack() {
        let mut p = ReadProof::default();
        p.failure_written(5);
        assert!(
            p.flush_received().is_empty(),
            "the first flush proves nothing"
        );
        p.failure_written(6);
        p.flush_ack_written();
        p.failure_written(7);
        assert_eq!(p.flush_received(), [5, 6]);
        p.flush_ack_written();
        assert_eq!(p.flush_received(), [7]);
        p.flush_ack_written();
        assert!(p.flush_received().is_empty());
        assert!(p.take_all().is_empty());
    }

    #[test]
    fn pipelined_flushes_prove_nothing() {
        let mut p = ReadProof::default();
        p.failure_written(5);
        assert!(p.flush_received().is_empty());
        // Flush 2 arrives before the ack of flush 1 was written.
        assert!(p.flush_received().is_empty());
        p.flush_ack_written();
        p.flush_ack_written();
        assert_eq!(p.take_all(), [5]);
    }

    #[test]
    fn unread_is_bounded_and_per_client() {
        let mut u = Unread::default();
        u.insert("a", 1, Reason::NotEntitled);
        u.insert("b", 1, Reason::Duplicate);
        assert_eq!(u.remove("a", &[1, 2]), [1]);
        assert!(u.of("a").is_empty());
        assert_eq!(u.of("b"), [(1, Reason::Duplicate)]);
        for s in 0..(MAX_UNREAD_PER_CLIENT as u64 + 5) {
            u.insert("c", s, Reason::NotEntitled);
        }
        assert_eq!(u.of("c").len(), MAX_UNREAD_PER_CLIENT);
        assert_eq!(u.of("c")[0].0, 5);
    }
}
