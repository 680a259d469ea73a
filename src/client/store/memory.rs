//! `MemoryStore`: unacknowledged messages in a `VecDeque`, in sequence order.
//!
//! Discarding is a pop from the front; lookup is a binary search (sequences strictly increase,
//! so the deque is sorted). It survives reconnects, not the process.

use std::collections::VecDeque;

use super::{Store, StoredMessage};
use crate::error::StoreError;

/// An in-memory publish store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    messages: VecDeque<StoredMessage>,
    bytes: usize,
    last_assigned: u64,
    last_discarded: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store that continues numbering after `last_assigned` and treats `<= last_discarded` as
    /// acknowledged (used by durable stores when they reopen).
    pub fn resume(last_assigned: u64, last_discarded: u64) -> MemoryStore {
        MemoryStore {
            last_assigned,
            last_discarded,
            ..MemoryStore::default()
        }
    }

    /// Raises [`Store::last_assigned`] to at least `seq` without holding a message: a durable
    /// store restoring the highest number it ever assigned after that message is gone.
    pub fn advance_last_assigned(&mut self, seq: u64) {
        self.last_assigned = self.last_assigned.max(seq);
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.messages.binary_search_by_key(&seq, |m| m.seq).ok()
    }
}

impl Store for MemoryStore {
    fn append(&mut self, msg: StoredMessage) -> Result<(), StoreError> {
        if msg.seq <= self.last_assigned {
            return Err(StoreError::SequenceNotIncreasing {
                seq: msg.seq,
                last: self.last_assigned,
            });
        }
        self.last_assigned = msg.seq;
        self.bytes += msg.weight();
        self.messages.push_back(msg);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn discard_up_to(&mut self, up_to: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        while let Some(front) = self.messages.front() {
            if front.seq > up_to {
                break;
            }
            self.bytes -= front.weight();
            self.messages.pop_front();
            n += 1;
        }
        self.last_discarded = self.last_discarded.max(up_to);
        Ok(n)
    }

    fn get(&self, seq: u64) -> Option<&StoredMessage> {
        self.position(seq).map(|i| &self.messages[i])
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &StoredMessage> + '_> {
        Box::new(self.messages.iter())
    }

    fn iter_from(&self, from: u64) -> Box<dyn Iterator<Item = &StoredMessage> + '_> {
        let start = self.messages.partition_point(|m| m.seq < from);
        Box::new(self.messages.range(start..))
    }

    fn retract(&mut self, from: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        while self.messages.back().is_some_and(|m| m.seq >= from) {
            if let Some(m) = self.messages.pop_back() {
                self.bytes -= m.weight();
                n += 1;
            }
        }
        Ok(n)
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn last_assigned(&self) -> u64 {
        self.last_assigned
    }

    fn last_discarded(&self) -> u64 {
        self.last_discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::store::Operation;
    use bytes::Bytes;

    fn msg(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            operation: Operation::Publish,
            topic: "t".into(),
            data: Bytes::from_static(b"abc"),
            options: None,
        }
    }

    #[test]
    fn append_lookup_discard() {
        let mut s = MemoryStore::new();
        for seq in 10..20 {
            s.append(msg(seq)).unwrap();
        }
        assert_eq!(s.len(), 10);
        assert_eq!(s.bytes(), 40);
        assert_eq!(s.get(15).map(|m| m.seq), Some(15));
        assert_eq!(s.discard_up_to(14).unwrap(), 5);
        assert!(s.get(14).is_none());
        assert_eq!(
            s.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (15..20).collect::<Vec<_>>()
        );
        assert_eq!(s.last_discarded(), 14);
        assert_eq!(s.last_assigned(), 19);
        assert!(matches!(
            s.append(msg(19)),
            Err(StoreError::SequenceNotIncreasing { .. })
        ));
        assert_eq!(
            s.iter_from(17).map(|m| m.seq).collect::<Vec<_>>(),
            [17, 18, 19]
        );
        assert_eq!(s.retract(18).unwrap(), 2);
        assert_eq!(s.len(), 3);
        assert_eq!(s.bytes(), 12);
        assert_eq!(s.last_assigned(), 19, "numbers are not reused");
        assert!(s.append(msg(20)).is_ok());
    }
}
