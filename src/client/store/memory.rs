//! `MemoryStore`: unacknowledged messages in memory, in sequence order, in a compact layout.
//!
//! The store only ever adds at the back (`append`), discards from the front (`discard_up_to`,
//! cumulative acks) and cuts from the back (`retract`): the messages it holds are one run of
//! what was appended. The layout leans on that:
//!
//! ```text
//! slots   VecDeque<Slot>, 24 bytes a message: sequence, (topic, operation) id, body place
//!         and length, an "extra" flag. Lookup is a binary search (sequences increase).
//! arena   bodies up to 4 KiB, copied end to end into 256 KiB chunks; a chunk is released
//!         once the front of the store has moved past it (arena.rs)
//! kinds   the distinct (topic, operation) pairs in use, each named by a u32 (kinds.rs)
//! extras  VecDeque, for the few messages with options or a body over 4 KiB (kept as the
//!         caller's Bytes), in sequence order beside their flagged slots
//! ```
//!
//! Copying a small body into the arena lets the caller's allocation go at once, so a message
//! costs its body plus about 25 bytes (the slot, with the deque's spare capacity at most 48),
//! where a `StoredMessage` in a deque cost 72 bytes, its `Bytes` allocation's overhead (16),
//! and the deque's spare room. `get` and `iter` lend [`MessageRef`] views into this layout.
//!
//! **Memory bound.** Every chunk but the newest was closed only when a body did not fit, so it
//! holds at least `256 KiB - 4 KiB` of bodies; only the oldest chunk can hold bodies already
//! discarded, and one released chunk is kept as a spare. Chunk memory is therefore at most
//! `1.016 x (body bytes held) + 3 x 256 KiB` (see [`MemoryStore::allocated_body_bytes`]): it
//! follows [`Store::bytes`], which the publish store bounds by `max_bytes`, and a message that
//! stays unacknowledged pins at most its own chunk (cumulative acks cannot discard what comes
//! after it). The slots, kinds and extras are bounded by the message count. A store that
//! empties keeps one chunk (reused from its start) and the deques' capacity.

mod arena;
mod kinds;

use std::collections::VecDeque;

use bytes::Bytes;

use super::{MessageOptions, MessageRef, Store, StoredMessage};
use crate::error::StoreError;
use arena::{Arena, Place, SMALL_MAX};
use kinds::Kinds;

/// Set in [`Slot::len`]: the message has an [`Extra`].
const EXTRA: u32 = 1 << 31;

/// One held message (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    kind: u32,
    /// Where the body is in the arena; for a body not in the arena, where the arena ended.
    place: Place,
    /// The body's length in the arena (0 when it is not there), and the [`EXTRA`] flag.
    len: u32,
}

impl Slot {
    fn arena_len(&self) -> usize {
        (self.len & !EXTRA) as usize
    }

    fn has_extra(&self) -> bool {
        self.len & EXTRA != 0
    }

    /// Where the arena ends after this message's body.
    fn end(&self) -> Place {
        Place {
            chunk: self.place.chunk,
            offset: self.place.offset + self.arena_len() as u32,
        }
    }
}

/// What a flagged slot holds outside the arena.
#[derive(Debug)]
struct Extra {
    seq: u64,
    /// A body over [`SMALL_MAX`], as the caller gave it.
    body: Option<Bytes>,
    options: Option<Box<MessageOptions>>,
}

/// An in-memory publish store (see the module docs for its layout and memory bound).
#[derive(Debug, Default)]
pub struct MemoryStore {
    slots: VecDeque<Slot>,
    arena: Arena,
    kinds: Kinds,
    extras: VecDeque<Extra>,
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

    /// [`Store::append`] from a borrowed message (the body is copied or, over 4 KiB, shared):
    /// for a store that also keeps the message itself, as the file store does for its writer.
    #[inline]
    pub fn push(&mut self, msg: &StoredMessage) -> Result<(), StoreError> {
        if msg.seq <= self.last_assigned {
            return Err(StoreError::SequenceNotIncreasing {
                seq: msg.seq,
                last: self.last_assigned,
            });
        }
        let slots = &self.slots;
        let kind = self
            .kinds
            .add(&msg.topic, msg.operation, msg.seq, || {
                slots.front().map_or(msg.seq, |s| s.seq)
            })
            .ok_or_else(|| self.full())?;
        let len = msg.data.len();
        if len <= SMALL_MAX && msg.options.is_none() {
            let place = self.arena.push(&msg.data);
            self.slots.push_back(Slot {
                seq: msg.seq,
                kind,
                place,
                len: len as u32,
            });
            self.bytes += msg.topic.len() + len;
        } else {
            self.push_extra(msg, kind);
        }
        self.last_assigned = msg.seq;
        Ok(())
    }

    /// [`MemoryStore::push`] for a message with options or a body over [`SMALL_MAX`].
    #[cold]
    fn push_extra(&mut self, msg: &StoredMessage, kind: u32) {
        let small = msg.data.len() <= SMALL_MAX;
        let place = self.arena.push(if small { &msg.data } else { &[] });
        let len = if small { msg.data.len() as u32 } else { 0 };
        self.extras.push_back(Extra {
            seq: msg.seq,
            body: (!small).then(|| msg.data.clone()),
            options: msg.options.clone(),
        });
        self.slots.push_back(Slot {
            seq: msg.seq,
            kind,
            place,
            len: len | EXTRA,
        });
        self.bytes += msg.weight();
    }

    /// Bytes of body chunks allocated: at most `1.016 x` the body bytes held `+ 768 KiB` (the
    /// module docs give the reasoning).
    pub fn allocated_body_bytes(&self) -> usize {
        self.arena.allocated()
    }

    /// The error for the unreachable case of `2^32 - 1` distinct topics held.
    fn full(&self) -> StoreError {
        StoreError::Full {
            messages: self.slots.len(),
            bytes: self.bytes,
            max_messages: self.slots.len(),
            max_bytes: self.bytes,
        }
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&seq, |s| s.seq).ok()
    }

    fn view<'a>(&'a self, slot: &Slot, extra: Option<&'a Extra>) -> MessageRef<'a> {
        let shared_data = extra.and_then(|e| e.body.as_ref());
        let data = match shared_data {
            Some(body) => &body[..],
            None if slot.arena_len() == 0 => &[],
            None => self.arena.get(slot.place, slot.arena_len()),
        };
        MessageRef {
            seq: slot.seq,
            operation: self.kinds.operation(slot.kind),
            topic: self.kinds.topic(slot.kind),
            data,
            shared_data,
            options: extra.and_then(|e| e.options.as_deref()),
        }
    }

    /// Removes slots from one end while `take(seq)` holds, each with its extra (extras are in
    /// the same order, so the one of an end slot is at the same end), and stops counting their
    /// bytes; returns how many. Discards take from the front, retractions from the back.
    fn pop_while(&mut self, end: End, take: impl Fn(u64) -> bool) -> usize {
        let mut n = 0;
        loop {
            let slot = match end {
                End::Front => self.slots.front(),
                End::Back => self.slots.back(),
            };
            let Some(slot) = slot.copied().filter(|s| take(s.seq)) else {
                return n;
            };
            let extra = match (end, slot.has_extra()) {
                (_, false) => None,
                (End::Front, true) => self.extras.pop_front(),
                (End::Back, true) => self.extras.pop_back(),
            };
            match end {
                End::Front => self.slots.pop_front(),
                End::Back => self.slots.pop_back(),
            };
            self.bytes -= self.weight_of(&slot, extra.as_ref());
            n += 1;
        }
    }

    /// The weight of a slot taken out of the deque, with its extra if it has one.
    #[inline]
    fn weight_of(&self, slot: &Slot, extra: Option<&Extra>) -> usize {
        let topic = self.kinds.topic(slot.kind).len();
        match extra {
            None => topic + slot.arena_len(),
            Some(e) => {
                let body = e.body.as_ref().map_or(slot.arena_len(), Bytes::len);
                topic + body + super::weight("", &[], e.options.as_deref())
            }
        }
    }

    fn iter_at(&self, start: usize, extras_start: usize) -> Iter<'_> {
        Iter {
            store: self,
            slots: self.slots.range(start..),
            extras: self.extras.range(extras_start..),
        }
    }
}

/// [`MemoryStore::iter`]: the slots, with the extras beside the flagged ones.
/// Which end of the store [`MemoryStore::pop_while`] takes from.
#[derive(Clone, Copy)]
enum End {
    Front,
    Back,
}

struct Iter<'a> {
    store: &'a MemoryStore,
    slots: std::collections::vec_deque::Iter<'a, Slot>,
    extras: std::collections::vec_deque::Iter<'a, Extra>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = MessageRef<'a>;

    fn next(&mut self) -> Option<MessageRef<'a>> {
        let slot = self.slots.next()?;
        let extra = if slot.has_extra() {
            self.extras.next()
        } else {
            None
        };
        debug_assert!(extra.is_none_or(|e| e.seq == slot.seq));
        Some(self.store.view(slot, extra))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

impl Store for MemoryStore {
    fn append(&mut self, msg: StoredMessage) -> Result<(), StoreError> {
        self.push(&msg)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn discard_up_to(&mut self, up_to: u64) -> Result<usize, StoreError> {
        let n = self.pop_while(End::Front, |seq| seq <= up_to);
        match self.slots.front() {
            Some(first) => self.arena.release_before(first.place),
            None => self.arena.clear(),
        }
        self.last_discarded = self.last_discarded.max(up_to);
        Ok(n)
    }

    fn get(&self, seq: u64) -> Option<MessageRef<'_>> {
        let slot = &self.slots[self.position(seq)?];
        let extra = if slot.has_extra() {
            let i = self.extras.binary_search_by_key(&seq, |e| e.seq).ok();
            debug_assert!(i.is_some(), "a flagged slot has its extra");
            i.map(|i| &self.extras[i])
        } else {
            None
        };
        Some(self.view(slot, extra))
    }

    fn iter(&self) -> Box<dyn Iterator<Item = MessageRef<'_>> + '_> {
        Box::new(self.iter_at(0, 0))
    }

    fn iter_from(&self, from: u64) -> Box<dyn Iterator<Item = MessageRef<'_>> + '_> {
        let start = self.slots.partition_point(|s| s.seq < from);
        let extras_start = self.extras.partition_point(|e| e.seq < from);
        Box::new(self.iter_at(start, extras_start))
    }

    fn retract(&mut self, from: u64) -> Result<usize, StoreError> {
        let n = self.pop_while(End::Back, |seq| seq >= from);
        match self.slots.back() {
            Some(last) => self.arena.truncate(last.end()),
            None => self.arena.clear(),
        }
        Ok(n)
    }

    fn len(&self) -> usize {
        self.slots.len()
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
mod tests;
