//! `Arena`: the bodies of small messages, copied end to end into large chunks.
//!
//! A body is placed at the end of the newest chunk, or at the start of a new one when it does
//! not fit; it never spans two chunks. A body is then named by its chunk's id and its offset,
//! 8 bytes instead of a `Bytes` handle (32 bytes) plus the allocator's overhead on every body
//! (16 bytes with glibc).
//!
//! The store discards from the front (cumulative acks) and retracts from the back, so the
//! bodies it holds are always one contiguous run of what was placed here: chunks are released
//! from the front once no held body lies in them, and cut from the back on a retract. The
//! memory held is therefore bounded by the bodies held, not by history (the bound is stated in
//! the parent module's docs). Nothing borrowed from a chunk outlives the store's borrow:
//! [`crate::client::store::MessageRef::to_message`] copies a body out, so a chunk's memory is
//! never pinned by a message handed to a user.

use std::collections::VecDeque;

/// The size of one chunk.
pub(super) const CHUNK: usize = 256 << 10;

/// Bodies up to this size are copied into the arena; larger ones are kept as the caller's
/// `Bytes` (their handle is small next to them, and copying them would cost time). At most this
/// much of a chunk goes unused at its end, so at most `SMALL_MAX / CHUNK` (1.6%) of the chunks.
pub(super) const SMALL_MAX: usize = 4 << 10;

/// Where a body starts: the chunk's id and the offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    pub chunk: u32,
    pub offset: u32,
}

/// The chunks (see the module docs).
#[derive(Default)]
pub(super) struct Arena {
    /// The chunk bodies are placed in, with id `current_id`. Capacity 0 until the first
    /// non-empty body: an unused store allocates nothing.
    current: Vec<u8>,
    current_id: u32,
    /// The older chunks, full: `older[i]` has id `current_id - older.len() + i` (wrapping), so
    /// a place's chunk is found by subtraction. Every chunk has capacity [`CHUNK`].
    older: VecDeque<Vec<u8>>,
    /// One released chunk kept for the next one needed: a store that fills and drains in a
    /// steady stream neither allocates nor faults in fresh pages.
    spare: Option<Vec<u8>>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("chunks", &(self.older.len() + 1))
            .field("current_id", &self.current_id)
            .field("current_used", &self.current.len())
            .field("spare", &self.spare.is_some())
            .finish()
    }
}

/// `a` comes after `b` in the wrapping order of chunk ids.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Arena {
    /// Copies `body` (at most [`SMALL_MAX`] bytes; empty is fine) to the end of the arena and
    /// returns where it starts. An empty body takes no room: its place only keeps places
    /// non-decreasing along the store.
    #[inline]
    pub fn push(&mut self, body: &[u8]) -> Place {
        debug_assert!(body.len() <= SMALL_MAX);
        if self.current.capacity() - self.current.len() < body.len() {
            self.next_chunk();
        }
        let place = Place {
            chunk: self.current_id,
            offset: self.current.len() as u32,
        };
        self.current.extend_from_slice(body);
        place
    }

    /// The `len` bytes at `place`. Empty if they are not held (never, for a place this arena
    /// returned whose body the store still holds).
    pub fn get(&self, place: Place, len: usize) -> &[u8] {
        let start = place.offset as usize;
        let chunk = if place.chunk == self.current_id {
            Some(&self.current)
        } else {
            let back = self.current_id.wrapping_sub(place.chunk) as usize;
            self.older
                .len()
                .checked_sub(back)
                .and_then(|i| self.older.get(i))
        };
        let body = chunk.and_then(|c| c.get(start..start + len));
        debug_assert!(body.is_some(), "a held body is in the arena");
        body.unwrap_or_default()
    }

    /// Releases every chunk before the one of `first`, the place of the oldest body held.
    pub fn release_before(&mut self, first: Place) {
        while !self.older.is_empty() && after(first.chunk, self.front_id()) {
            if let Some(c) = self.older.pop_front() {
                self.recycle(c);
            }
        }
    }

    /// Nothing is held any more: every chunk is released but the current one, which starts
    /// over.
    pub fn clear(&mut self) {
        while let Some(c) = self.older.pop_front() {
            self.recycle(c);
        }
        self.current.clear();
    }

    /// Cuts the arena back so that it ends at `end` (a retract: nothing after it is held).
    pub fn truncate(&mut self, end: Place) {
        while after(self.current_id, end.chunk) {
            let Some(prev) = self.older.pop_back() else {
                break;
            };
            let cut = std::mem::replace(&mut self.current, prev);
            self.recycle(cut);
            self.current_id = self.current_id.wrapping_sub(1);
        }
        if self.current_id == end.chunk {
            self.current.truncate(end.offset as usize);
        }
    }

    /// Bytes of chunk memory allocated (the spare included).
    pub fn allocated(&self) -> usize {
        let spare = self.spare.as_ref().map_or(0, Vec::capacity);
        self.older.iter().map(Vec::capacity).sum::<usize>() + self.current.capacity() + spare
    }

    fn front_id(&self) -> u32 {
        self.current_id.wrapping_sub(self.older.len() as u32)
    }

    #[cold]
    fn next_chunk(&mut self) {
        let fresh = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.current, fresh);
        if full.capacity() > 0 {
            self.older.push_back(full);
            self.current_id = self.current_id.wrapping_add(1);
        }
    }

    fn recycle(&mut self, mut chunk: Vec<u8>) {
        if self.spare.is_none() && chunk.capacity() > 0 {
            chunk.clear();
            self.spare = Some(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_fill_a_chunk_then_start_the_next() {
        let mut a = Arena::default();
        let body = [7u8; SMALL_MAX];
        let per_chunk = CHUNK / SMALL_MAX;
        let places: Vec<Place> = (0..per_chunk + 1).map(|_| a.push(&body)).collect();
        assert_eq!(
            places[0],
            Place {
                chunk: 0,
                offset: 0
            }
        );
        assert_eq!(places[per_chunk - 1].chunk, 0);
        assert_eq!(
            places[per_chunk],
            Place {
                chunk: 1,
                offset: 0
            }
        );
        assert_eq!(a.get(places[3], SMALL_MAX), &body[..]);
        assert_eq!(a.allocated(), 2 * CHUNK);
        a.release_before(places[per_chunk]);
        assert_eq!(a.allocated(), 2 * CHUNK, "the released chunk is the spare");
        assert_eq!(a.get(places[per_chunk], SMALL_MAX), &body[..]);
        // A body that does not fit the rest of a chunk starts a new one: it never spans two.
        let mut b = Arena::default();
        for _ in 1..per_chunk {
            b.push(&body);
        }
        b.push(&body[10..]);
        let p = b.push(&[2u8; 11]);
        assert_eq!(
            p,
            Place {
                chunk: 1,
                offset: 0
            }
        );
        assert_eq!(b.get(p, 11), &[2u8; 11]);
    }

    #[test]
    fn ids_wrap() {
        let mut a = Arena {
            current_id: u32::MAX - 1,
            ..Arena::default()
        };
        let big = vec![3u8; SMALL_MAX];
        let per_chunk = CHUNK / SMALL_MAX;
        let places: Vec<Place> = (0..4 * per_chunk).map(|_| a.push(&big)).collect();
        let ids: Vec<u32> = places.iter().step_by(per_chunk).map(|p| p.chunk).collect();
        assert_eq!(ids, [u32::MAX - 1, u32::MAX, 0, 1]);
        // A retract back into the second chunk, then a discard up to it.
        let keep = places[per_chunk + 2];
        a.truncate(Place {
            chunk: keep.chunk,
            offset: keep.offset + SMALL_MAX as u32,
        });
        a.release_before(keep);
        assert_eq!(a.allocated(), 2 * CHUNK, "one chunk held, one spare");
        assert_eq!(a.get(keep, SMALL_MAX), &big[..]);
        assert_eq!(a.get(places[per_chunk], SMALL_MAX), &big[..]);
        let next = a.push(&[9]);
        assert_eq!(next.chunk, u32::MAX);
        assert_eq!(next.offset, keep.offset + SMALL_MAX as u32);
    }
}
