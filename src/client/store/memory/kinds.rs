//! `Kinds`: the distinct (topic, operation) pairs of the held messages, each named by a `u32`.
//!
//! A held message stores the 4-byte id of its pair instead of an `Arc<str>` (16 bytes) and an
//! operation. Each pair remembers the highest sequence that used it; a pair whose sequence is
//! below the oldest message held is used by no held message (sequences only grow), so it can
//! go. Nothing is counted per message: discarding costs the table nothing, and consecutive
//! messages to one topic cost a pointer (or string) comparison. The table is swept when it has doubled
//! since the last sweep (and holds more than [`SWEEP_AT_LEAST`] pairs), so it stays within
//! twice the pairs in use plus a constant: bounded by the messages held, not by every topic
//! ever written.

use std::collections::HashMap;
use std::sync::Arc;

use crate::client::store::Operation;

/// No sweep below this many pairs.
const SWEEP_AT_LEAST: usize = 32;

/// Marks "no pair" in [`Kinds::by_topic`] and [`Kinds::last`].
const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Entry {
    /// The shared empty topic while the entry is free.
    topic: Arc<str>,
    operation: Operation,
    /// The highest sequence of a message of this pair.
    last_seq: u64,
    free: bool,
}

/// The table (see the module docs).
#[derive(Debug)]
pub(super) struct Kinds {
    entries: Vec<Entry>,
    /// The ids of a topic's pairs, by [`op_index`].
    by_topic: HashMap<Arc<str>, [u32; 3]>,
    free: Vec<u32>,
    /// Entries in use (not free) above which the next new pair sweeps first.
    sweep_at: usize,
    /// The pair of the last message added: consecutive messages to one topic skip the hash.
    last: u32,
    /// What a free entry points to, so that every id names some topic.
    empty: Arc<str>,
}

impl Default for Kinds {
    fn default() -> Kinds {
        Kinds {
            entries: Vec::new(),
            by_topic: HashMap::new(),
            free: Vec::new(),
            sweep_at: SWEEP_AT_LEAST,
            last: NONE,
            empty: Arc::from(""),
        }
    }
}

fn op_index(op: Operation) -> usize {
    match op {
        Operation::Publish => 0,
        Operation::DeltaPublish => 1,
        Operation::SowDelete => 2,
    }
}

impl Kinds {
    /// The id of `(topic, operation)` for the message `seq`, the highest so far. `oldest` is
    /// the sequence of the oldest message still held (or `seq` when none is): pairs used only
    /// below it may be swept. `None` only when 2^32 - 1 pairs are in use (unreachable in
    /// practice: each needs a held message).
    #[inline]
    pub fn add(
        &mut self,
        topic: &Arc<str>,
        operation: Operation,
        seq: u64,
        oldest: impl FnOnce() -> u64,
    ) -> Option<u32> {
        if let Some(e) = self.entries.get_mut(self.last as usize) {
            if e.operation == operation && (Arc::ptr_eq(&e.topic, topic) || e.topic == *topic) {
                e.last_seq = seq;
                return Some(self.last);
            }
        }
        self.add_slow(topic, operation, seq, oldest())
    }

    /// The topic of pair `id`.
    #[inline]
    pub fn topic(&self, id: u32) -> &Arc<str> {
        self.entries
            .get(id as usize)
            .map_or(&self.empty, |e| &e.topic)
    }

    /// The operation of pair `id`.
    pub fn operation(&self, id: u32) -> Operation {
        self.entries
            .get(id as usize)
            .map_or(Operation::Publish, |e| e.operation)
    }

    /// Entries allocated (used and free), for the bound tests.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    #[cold]
    fn add_slow(
        &mut self,
        topic: &Arc<str>,
        operation: Operation,
        seq: u64,
        oldest: u64,
    ) -> Option<u32> {
        let known = self
            .by_topic
            .get(&**topic)
            .map_or(NONE, |ids| ids[op_index(operation)]);
        let id = if known != NONE {
            known
        } else {
            if self.entries.len() - self.free.len() >= self.sweep_at {
                self.sweep(oldest);
            }
            self.insert(topic, operation)?
        };
        self.entries[id as usize].last_seq = seq;
        self.last = id;
        Some(id)
    }

    fn insert(&mut self, topic: &Arc<str>, operation: Operation) -> Option<u32> {
        // One allocation per topic, whatever its operations.
        let topic = match self.by_topic.get_key_value(&**topic) {
            Some((known, _)) => Arc::clone(known),
            None => Arc::clone(topic),
        };
        let entry = Entry {
            topic: Arc::clone(&topic),
            operation,
            last_seq: 0,
            free: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                let id = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&id| id != NONE)?;
                self.entries.push(entry);
                id
            }
        };
        self.by_topic.entry(topic).or_insert([NONE; 3])[op_index(operation)] = id;
        Some(id)
    }

    /// Frees every pair used only by messages below `oldest`.
    fn sweep(&mut self, oldest: u64) {
        for (id, e) in self.entries.iter_mut().enumerate() {
            if e.free || e.last_seq >= oldest {
                continue;
            }
            if let Some(ids) = self.by_topic.get_mut(&*e.topic) {
                ids[op_index(e.operation)] = NONE;
                if ids.iter().all(|&i| i == NONE) {
                    self.by_topic.remove(&*e.topic);
                }
            }
            e.topic = Arc::clone(&self.empty);
            e.free = true;
            self.free.push(id as u32);
        }
        // Trailing free entries are dropped, so the table shrinks after a burst of topics.
        while self.entries.last().is_some_and(|e| e.free) {
            self.entries.pop();
        }
        let len = self.entries.len() as u32;
        self.free.retain(|&id| id < len);
        let in_use = self.entries.len() - self.free.len();
        self.sweep_at = (2 * in_use).max(SWEEP_AT_LEAST);
        if self.entries.capacity() > 2 * self.sweep_at {
            self.entries.shrink_to(self.sweep_at);
        }
        if self.free.capacity() > 2 * self.sweep_at {
            self.free.shrink_to(self.sweep_at);
        }
        self.by_topic.shrink_to(self.sweep_at);
        self.last = NONE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_shared_and_swept_once_unused() {
        let mut k = Kinds::default();
        let a: Arc<str> = "a".into();
        let a2: Arc<str> = "a".into();
        let ida = k.add(&a, Operation::Publish, 1, || 1).unwrap();
        assert_eq!(
            k.add(&a2, Operation::Publish, 2, || 1),
            Some(ida),
            "by content"
        );
        let idd = k.add(&a, Operation::DeltaPublish, 3, || 1).unwrap();
        assert_ne!(ida, idd);
        assert_eq!(
            k.add(&a, Operation::Publish, 4, || 1),
            Some(ida),
            "through the hash"
        );
        assert_eq!(&**k.topic(idd), "a");
        assert_eq!(k.operation(idd), Operation::DeltaPublish);
        // Many topics, each used by one message discarded before the next: the table stays
        // bounded by the pairs in use.
        let mut k = Kinds::default();
        for seq in 1..10_000u64 {
            let t: Arc<str> = format!("t{seq}").into();
            k.add(&t, Operation::SowDelete, seq, || seq).unwrap();
            assert!(k.capacity() <= SWEEP_AT_LEAST + 1, "{}", k.capacity());
        }
        // Held messages keep their pairs: a front that stays at 1 keeps every pair.
        let mut k = Kinds::default();
        let ids: Vec<u32> = (1..100u64)
            .map(|seq| {
                let t: Arc<str> = format!("t{seq}").into();
                k.add(&t, Operation::Publish, seq, || 1).unwrap()
            })
            .collect();
        for (seq, id) in (1..100u64).zip(ids) {
            assert_eq!(&**k.topic(id), format!("t{seq}"));
        }
    }
}
