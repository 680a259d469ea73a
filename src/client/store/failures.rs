//! Failure enrichment and bookkeeping: which message a failure ack is about, whose write it
//! was, that it is reported once, and which flush report claims it.
//!
//! A failure ack for sequence `N` is looked up, in order:
//! 1. in the store: the ordinary case (the write is still unacknowledged);
//! 2. in **limbo**: the messages the last logon discarded because the server's last sequence
//!    covered them. The server sends the failures an earlier connection did not demonstrably
//!    read right after the logon ack, before any success ack, so limbo lives until the first
//!    success ack on the new connection;
//! 3. in the **reported** set (the most recent reported sequences): a repeat (the server
//!    re-sent a failure this process already reported, or refused a replayed message again),
//!    not reported twice;
//! 4. nowhere: reported with `message: None`, nothing invented.
//!
//! Whose write: sequences below the first one this process assigned belong to a predecessor
//! with the same client name (restored from a file store, or unknown to a memory store).
//!
//! Flush reports: every reported failure with a sequence waits in `unclaimed` until the first
//! flush that resolves with a target at or above it claims it, so each failure is in exactly one
//! report. The set is bounded; past the bound the oldest are counted, not listed.

use std::collections::{BTreeMap, BTreeSet};

use super::StoredMessage;
use crate::client::messages::FlushReport;

/// How many reported failure sequences are remembered for suppressing repeats.
const REPORTED_MEMORY: usize = 65_536;

/// How many failures wait for a flush report before the oldest are only counted.
const UNCLAIMED_MEMORY: usize = 1 << 20;

/// Where a failure ack's message was found.
#[derive(Debug)]
pub(super) enum Lookup {
    /// Discarded by the last logon (the server had it) and kept in limbo.
    Limbo(StoredMessage),
    /// Already reported: ignore the repeat.
    Repeat,
    /// Nowhere.
    Unknown,
}

/// The failure book (see the module docs).
#[derive(Debug, Default)]
pub(super) struct FailureBook {
    /// Messages the last logon discarded, in sequence order, until the first success ack.
    limbo: Vec<StoredMessage>,
    reported: BTreeSet<u64>,
    /// Reported failures no flush report has claimed yet: sequence -> a predecessor's.
    unclaimed: BTreeMap<u64, bool>,
    /// Failures dropped from `unclaimed` at its bound: (count, of which predecessors').
    overflow: (u64, u64),
}

impl FailureBook {
    /// Looks `seq` up outside the store (the caller tried the store first).
    pub fn lookup_outside_store(&mut self, seq: u64) -> Lookup {
        if let Ok(i) = self.limbo.binary_search_by_key(&seq, |m| m.seq) {
            return Lookup::Limbo(self.limbo.remove(i));
        }
        if self.reported.contains(&seq) {
            return Lookup::Repeat;
        }
        Lookup::Unknown
    }

    /// Keeps messages a logon discarded (in sequence order) for late failure acks.
    pub fn keep_in_limbo(&mut self, messages: impl IntoIterator<Item = StoredMessage>) {
        self.limbo.extend(messages);
        self.limbo.sort_by_key(|m| m.seq);
        self.limbo.dedup_by_key(|m| m.seq);
    }

    /// A success ack arrived: no re-sent failure can follow on this connection.
    pub fn clear_limbo(&mut self) {
        self.limbo.clear();
        self.limbo.shrink_to(64);
    }

    /// Records that `seq` was reported (own or a predecessor's), for repeats and flush reports.
    pub fn reported(&mut self, seq: u64, predecessor: bool) {
        self.reported.insert(seq);
        if self.reported.len() > REPORTED_MEMORY {
            self.reported.pop_first();
        }
        self.unclaimed.insert(seq, predecessor);
        if self.unclaimed.len() > UNCLAIMED_MEMORY {
            if let Some((_, pred)) = self.unclaimed.pop_first() {
                self.overflow.0 += 1;
                self.overflow.1 += u64::from(pred);
            }
        }
    }

    /// The report of a flush with this target: every unclaimed failure at or below it.
    pub fn claim(&mut self, target: u64) -> FlushReport {
        let above = self.unclaimed.split_off(&target.saturating_add(1));
        let claimed = std::mem::replace(&mut self.unclaimed, above);
        let (over, over_pred) = std::mem::take(&mut self.overflow);
        FlushReport {
            failed: claimed.len() as u64 + over,
            predecessor_failed: claimed.values().filter(|p| **p).count() as u64 + over_pred,
            sequences: claimed.into_keys().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::store::Operation;

    fn msg(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            operation: Operation::Publish,
            topic: "t".into(),
            data: bytes::Bytes::from_static(b"x"),
            options: None,
        }
    }

    #[test]
    fn limbo_then_repeat_then_unknown() {
        let mut b = FailureBook::default();
        b.keep_in_limbo([msg(3), msg(1), msg(2)]);
        assert!(matches!(b.lookup_outside_store(2), Lookup::Limbo(m) if m.seq == 2));
        b.reported(2, false);
        assert!(matches!(b.lookup_outside_store(2), Lookup::Repeat));
        assert!(matches!(b.lookup_outside_store(9), Lookup::Unknown));
        b.clear_limbo();
        assert!(matches!(b.lookup_outside_store(3), Lookup::Unknown));
    }

    #[test]
    fn each_failure_is_claimed_by_one_report() {
        let mut b = FailureBook::default();
        b.reported(5, true);
        b.reported(7, false);
        b.reported(12, false);
        let r = b.claim(10);
        assert_eq!(r.sequences, [5, 7]);
        assert_eq!((r.failed, r.predecessor_failed), (2, 1));
        assert_eq!(b.claim(10), FlushReport::default());
        assert_eq!(b.claim(20).sequences, [12]);
    }
}
