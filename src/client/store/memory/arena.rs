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
    /// `chunks[i]` has id `front_id + i` (wrapping): ids only grow, so a place's chunk is found
    /// by subtraction. Every chunk is allocated with capacity [`CHUNK`] and never grows.
    chunks: VecDeque<Vec<u8>>,
    front_id: u32,
    /// One released chunk kept for the next one needed: a store that fills and drains in a
    /// steady stream neither allocates nor faults in fresh pages.
    spare: Option<Vec<u8>>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("chunks", &self.chunks.len())
            .field("front_id", &self.front_id)
            .field("used", &self.chunks.iter().map(Vec::len).sum::<usize>())
            .field("spare", &self.spare.is_some())
            .finish()
    }
}

/// `a` comes after `b` in the wrapping order of chunk ids.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Arena {
    /// Where the next body would start if it fits in the newest chunk. A message whose body is
    /// not in the arena records this place, so that places never decrease along the store.
    pub fn mark(&self) -> Place {
        match self.chunks.back() {
            Some(c) => Place {
                chunk: self.back_id(),
                offset: c.len() as u32,
            },
            None => Place {
                chunk: self.front_id,
                offset: 0,
            },
        }
    }

    /// Copies `body` (at most [`SMALL_MAX`] bytes) to the end of the arena.
    pub fn push(&mut self, body: &[u8]) -> Place {
        debug_assert!(body.len() <= SMALL_MAX);
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.capacity() - c.len() >= body.len());
        if !fits {
            let chunk = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(CHUNK));
            self.chunks.push_back(chunk);
        }
        let place = self.mark();
        if let Some(c) = self.chunks.back_mut() {
            c.extend_from_slice(body);
        }
        place
    }

    /// The `len` bytes at `place`. Empty if they are not held (never, for a place this arena
    /// returned whose body the store still holds).
    pub fn get(&self, place: Place, len: usize) -> &[u8] {
        let at = place.chunk.wrapping_sub(self.front_id) as usize;
        let start = place.offset as usize;
        let body = self.chunks.get(at).and_then(|c| c.get(start..start + len));
        debug_assert!(body.is_some(), "a held body is in the arena");
        body.unwrap_or_default()
    }

    /// Releases every chunk before the one of `first`, the place of the oldest body held.
    pub fn release_before(&mut self, first: Place) {
        while self.chunks.len() > 1 && after(first.chunk, self.front_id) {
            if let Some(c) = self.chunks.pop_front() {
                self.recycle(c);
            }
            self.front_id = self.front_id.wrapping_add(1);
        }
    }

    /// Nothing is held any more: every chunk is released but the newest, which starts over.
    pub fn clear(&mut self) {
        while self.chunks.len() > 1 {
            if let Some(c) = self.chunks.pop_front() {
                self.recycle(c);
            }
            self.front_id = self.front_id.wrapping_add(1);
        }
        if let Some(c) = self.chunks.front_mut() {
            c.clear();
        }
    }

    /// Cuts the arena back so that it ends at `end` (a retract: nothing after it is held).
    pub fn truncate(&mut self, end: Place) {
        while !self.chunks.is_empty() && after(self.back_id(), end.chunk) {
            if let Some(c) = self.chunks.pop_back() {
                self.recycle(c);
            }
        }
        if let Some(c) = self.chunks.back_mut() {
            c.truncate(end.offset as usize);
        }
    }

    /// Bytes of chunk memory allocated (the spare included).
    pub fn allocated(&self) -> usize {
        let spare = self.spare.as_ref().map_or(0, Vec::capacity);
        self.chunks.iter().map(Vec::capacity).sum::<usize>() + spare
    }

    fn back_id(&self) -> u32 {
        self.front_id
            .wrapping_add(self.chunks.len().saturating_sub(1) as u32)
    }

    fn recycle(&mut self, mut chunk: Vec<u8>) {
        if self.spare.is_none() {
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
            front_id: u32::MAX - 1,
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
