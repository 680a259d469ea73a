//! `Kinds`: the distinct (topic, operation) pairs of the held messages, each named by a `u32`.
//!
//! A held message stores the 4-byte id of its pair instead of an `Arc<str>` (16 bytes) and an
//! operation. Each pair counts the messages that use it. A pair no message uses any more stays
//! (idle) so that a store that keeps emptying and refilling with one topic does not hash it on
//! every write; idle pairs are swept once they outnumber the used ones (and are more than
//! [`IDLE_KEPT`]), so the table stays within twice the used pairs plus a constant: bounded by
//! the messages held, not by every topic ever written.

use std::collections::HashMap;
use std::sync::Arc;

use crate::client::store::Operation;

/// Idle pairs kept at least, before a sweep.
const IDLE_KEPT: usize = 32;

/// Marks "no pair" in [`Kinds::by_topic`].
const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Entry {
    /// The shared empty topic while the entry is free.
    topic: Arc<str>,
    operation: Operation,
    /// Held messages of this pair; an entry in use with 0 is idle.
    uses: usize,
    free: bool,
}

/// The table (see the module docs).
#[derive(Debug)]
pub(super) struct Kinds {
    entries: Vec<Entry>,
    /// The ids of a topic's pairs, by [`op_index`].
    by_topic: HashMap<Arc<str>, [u32; 3]>,
    free: Vec<u32>,
    idle: usize,
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
            idle: 0,
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
    /// The id of `(topic, operation)`, counted once more; `None` only when 2^32 - 1 pairs are
    /// in use (unreachable in practice: each needs a held message).
    pub fn add(&mut self, topic: &Arc<str>, operation: Operation) -> Option<u32> {
        let hit = self.entries.get(self.last as usize).is_some_and(|e| {
            !e.free
                && e.operation == operation
                && (Arc::ptr_eq(&e.topic, topic) || e.topic == *topic)
        });
        let id = if hit {
            self.last
        } else {
            let known = self
                .by_topic
                .get(&**topic)
                .map_or(NONE, |ids| ids[op_index(operation)]);
            if known == NONE {
                self.insert(topic, operation)?
            } else {
                known
            }
        };
        let e = &mut self.entries[id as usize];
        if e.uses == 0 {
            self.idle -= 1;
        }
        e.uses += 1;
        self.last = id;
        Some(id)
    }

    /// One message of pair `id` is no longer held.
    pub fn remove(&mut self, id: u32) {
        let Some(e) = self.entries.get_mut(id as usize) else {
            debug_assert!(false, "a held message's pair exists");
            return;
        };
        debug_assert!(e.uses > 0 && !e.free);
        e.uses = e.uses.saturating_sub(1);
        if e.uses == 0 {
            self.idle += 1;
            if self.idle > IDLE_KEPT && self.idle > self.in_use() {
                self.sweep();
            }
        }
    }

    /// The topic of pair `id`.
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

    /// Entries allocated (used, idle and free), for the bound tests.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    fn in_use(&self) -> usize {
        self.entries.len() - self.free.len() - self.idle
    }

    fn insert(&mut self, topic: &Arc<str>, operation: Operation) -> Option<u32> {
        let entry = Entry {
            topic: Arc::clone(topic),
            operation,
            uses: 0,
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
        self.by_topic.entry(Arc::clone(topic)).or_insert([NONE; 3])[op_index(operation)] = id;
        self.idle += 1;
        Some(id)
    }

    /// Frees every idle pair.
    fn sweep(&mut self) {
        for (id, e) in self.entries.iter_mut().enumerate() {
            if e.free || e.uses > 0 {
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
        self.idle = 0;
        // Trailing free entries are dropped, so the table shrinks after a burst of topics.
        while self.entries.last().is_some_and(|e| e.free) {
            self.entries.pop();
        }
        let len = self.entries.len() as u32;
        self.free.retain(|&id| id < len);
        if self.entries.capacity() > 2 * self.entries.len() + IDLE_KEPT {
            self.entries.shrink_to(self.entries.len() + IDLE_KEPT);
        }
        if self.free.capacity() > 2 * self.free.len() + IDLE_KEPT {
            self.free.shrink_to(self.free.len() + IDLE_KEPT);
        }
        self.by_topic.shrink_to(self.by_topic.len() + IDLE_KEPT);
        self.last = NONE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_shared_counted_and_swept() {
        let mut k = Kinds::default();
        let a: Arc<str> = "a".into();
        let a2: Arc<str> = "a".into();
        let ida = k.add(&a, Operation::Publish).unwrap();
        assert_eq!(k.add(&a2, Operation::Publish), Some(ida), "by content");
        let idd = k.add(&a, Operation::DeltaPublish).unwrap();
        assert_ne!(ida, idd);
        assert_eq!(k.add(&a, Operation::Publish), Some(ida), "through the hash");
        assert_eq!(&**k.topic(idd), "a");
        assert_eq!(k.operation(idd), Operation::DeltaPublish);
        // Many topics used once each: the table stays bounded by the pairs in use.
        for i in 0..10_000 {
            let t: Arc<str> = format!("t{i}").into();
            let id = k.add(&t, Operation::SowDelete).unwrap();
            k.remove(id);
            assert!(k.capacity() <= 2 * 2 + IDLE_KEPT + 2, "{}", k.capacity());
        }
        assert_eq!(&**k.topic(ida), "a", "pairs in use survive sweeps");
        for _ in 0..3 {
            k.remove(ida);
        }
        k.remove(idd);
        for i in 0..100 {
            let t: Arc<str> = format!("u{i}").into();
            let id = k.add(&t, Operation::Publish).unwrap();
            k.remove(id);
        }
        assert!(k.capacity() <= IDLE_KEPT + 1, "{}", k.capacity());
        assert!(k.by_topic.len() <= IDLE_KEPT + 1);
    }
}
