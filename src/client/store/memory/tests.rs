//! The memory store against a plain model (a deque of whole messages), and its memory bound.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::arena::{CHUNK, SMALL_MAX};
use super::*;
use crate::client::store::Operation;

fn msg(seq: u64) -> StoredMessage {
    StoredMessage {
        seq,
        operation: Operation::Publish,
        topic: "t".into(),
        data: Bytes::from_static(b"abc"),
        options: None,
    }
}

/// A body whose bytes depend on its sequence, so a misplaced body is seen.
fn body(seq: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect::<Vec<u8>>()
        .into()
}

/// The most chunk memory the module docs allow for these bodies in the arena.
fn body_bound(store: &MemoryStore) -> usize {
    let in_arena: usize = store
        .iter()
        .map(|m| m.data.len())
        .filter(|&n| n <= SMALL_MAX)
        .sum();
    in_arena * CHUNK / (CHUNK - SMALL_MAX) + 3 * CHUNK
}

#[test]
fn a_slot_is_24_bytes() {
    assert_eq!(std::mem::size_of::<Slot>(), 24);
    assert_eq!(
        std::mem::size_of::<Extra>(),
        48,
        "the docs give this figure"
    );
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
    assert_eq!(s.get(15).map(|m| m.data), Some(&b"abc"[..]));
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

#[test]
fn options_large_and_empty_bodies_round_trip() {
    let mut s = MemoryStore::new();
    let written = [
        StoredMessage {
            options: Some(Box::new(MessageOptions {
                correlation_id: Some("c".into()),
                expiration: Some(5),
                ..MessageOptions::default()
            })),
            ..msg(1)
        },
        StoredMessage {
            data: body(2, SMALL_MAX + 1),
            ..msg(2)
        },
        StoredMessage {
            operation: Operation::SowDelete,
            data: Bytes::new(),
            options: Some(Box::new(MessageOptions {
                filter: Some("/x = 1".into()),
                ..MessageOptions::default()
            })),
            ..msg(3)
        },
        StoredMessage {
            topic: "other".into(),
            data: body(4, SMALL_MAX),
            ..msg(4)
        },
    ];
    for m in &written {
        s.append(m.clone()).unwrap();
    }
    let held: Vec<StoredMessage> = s.iter().map(StoredMessage::from).collect();
    assert_eq!(held, written);
    for m in &written {
        assert_eq!(s.get(m.seq), Some(m.view()));
    }
    assert_eq!(
        s.bytes(),
        written.iter().map(StoredMessage::weight).sum::<usize>()
    );
    assert_eq!(s.iter_from(3).count(), 2);
    assert_eq!(
        s.iter_from(3).next().map(|m| m.opts().filter.clone()),
        Some(Some("/x = 1".into()))
    );
    // The large body is the caller's, shared rather than copied.
    let large = s.get(2).map(|m| m.data.as_ptr());
    assert_eq!(large, Some(written[1].data.as_ptr()));
    s.discard_up_to(2).unwrap();
    assert_eq!(s.get(3), Some(written[2].view()));
    s.retract(4).unwrap();
    assert_eq!(s.bytes(), written[2].weight());
    s.discard_up_to(3).unwrap();
    assert_eq!(s.bytes(), 0);
    assert!(s.is_empty());
}

#[test]
fn the_caller_body_is_released_on_append() {
    let mut s = MemoryStore::new();
    let data = body(1, 128);
    let m = StoredMessage {
        data: data.clone(),
        ..msg(1)
    };
    s.append(m).unwrap();
    assert!(data.is_unique(), "the store kept no handle on a small body");
    assert_eq!(s.get(1).map(|m| m.data), Some(&data[..]));
}

#[test]
fn chunk_memory_follows_the_bodies_held() {
    let mut s = MemoryStore::new();
    let mut seq = 0;
    let mut append = |s: &mut MemoryStore, len: usize| {
        seq += 1;
        s.append(StoredMessage {
            data: body(seq, len),
            ..msg(seq)
        })
        .unwrap();
        seq
    };
    // A long stream acknowledged in steps, 500 messages behind: the chunk memory follows what
    // is held, not what went through.
    for round in 0..50 {
        for _ in 0..2000 {
            append(&mut s, 100 + round);
        }
        let last = s.last_assigned();
        s.discard_up_to(last - 500).unwrap();
        assert!(s.allocated_body_bytes() <= body_bound(&s), "round {round}");
    }
    assert!(s.allocated_body_bytes() <= 3 * CHUNK);
    // Bodies that just miss the rest of a chunk leave the most unused: still within the bound.
    for _ in 0..1000 {
        append(&mut s, SMALL_MAX);
        append(&mut s, SMALL_MAX / 2 + 1);
    }
    assert!(s.allocated_body_bytes() <= body_bound(&s));
    let last = s.last_assigned();
    s.discard_up_to(last).unwrap();
    assert_eq!(
        s.allocated_body_bytes(),
        2 * CHUNK,
        "one chunk to reuse, one spare"
    );
    // A retract gives its chunks back too.
    for _ in 0..10_000 {
        append(&mut s, 200);
    }
    s.retract(last + 10).unwrap();
    assert!(s.allocated_body_bytes() <= body_bound(&s));
}

#[derive(Clone, Debug)]
enum Op {
    /// Appends with this sequence gap (1: the next number), topic, operation, body length and
    /// whether it has options.
    Append {
        gap: u64,
        topic: u8,
        op: u8,
        len: usize,
        options: bool,
    },
    /// Appends `count` messages with bodies of `len` bytes, numbered on (crosses chunks).
    Burst { count: usize, len: usize },
    /// Discards up to the `n`-th held message (past the end: everything and beyond).
    Discard(usize),
    /// Retracts the last `n + 1` held messages.
    Retract(usize),
    /// Looks the `n`-th held message up, and iterates from it.
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        2 => Just(0usize),
        6 => 1usize..300,
        4 => (SMALL_MAX - 1000)..=SMALL_MAX,
        1 => (SMALL_MAX + 1)..(SMALL_MAX + 3000),
    ];
    prop_oneof![
        8 => (prop_oneof![9 => Just(1u64), 1 => 2u64..5], 0u8..4, 0u8..3, len, proptest::bool::weighted(0.1))
            .prop_map(|(gap, topic, op, len, options)| Op::Append { gap, topic, op, len, options }),
        1 => (10usize..150, (SMALL_MAX / 2)..=SMALL_MAX).prop_map(|(count, len)| Op::Burst { count, len }),
        2 => prop_oneof![9 => 0usize..30, 1 => Just(usize::MAX)].prop_map(Op::Discard),
        1 => prop_oneof![9 => 0usize..5, 1 => Just(usize::MAX)].prop_map(Op::Retract),
        2 => (0usize..200).prop_map(Op::Read),
    ]
}

fn check(s: &MemoryStore, model: &VecDeque<StoredMessage>) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.len(), model.len());
    prop_assert_eq!(
        s.bytes(),
        model.iter().map(StoredMessage::weight).sum::<usize>()
    );
    prop_assert!(s.iter().eq(model.iter().map(StoredMessage::view)));
    prop_assert!(s.allocated_body_bytes() <= body_bound(s));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)))]

    #[test]
    fn behaves_like_a_deque_of_messages(ops in proptest::collection::vec(op(), 1..600)) {
        let topics: Vec<Arc<str>> = ["a", "b", "a/long/topic", "c"].map(Arc::from).to_vec();
        let mut s = MemoryStore::new();
        let mut model: VecDeque<StoredMessage> = VecDeque::new();
        let mut last = 0u64;
        let mut discarded = 0u64;
        for op in ops {
            match op {
                Op::Append { gap, topic, op, len, options } => {
                    let seq = last + gap;
                    // A fresh Arc now and then: the store matches topics by content too.
                    let topic = if seq.is_multiple_of(7) {
                        Arc::from(&*topics[topic as usize])
                    } else {
                        topics[topic as usize].clone()
                    };
                    let m = StoredMessage {
                        seq,
                        operation: Operation::from_u8(op + 1).unwrap(),
                        topic,
                        data: body(seq, len),
                        options: options.then(|| Box::new(MessageOptions {
                            correlation_id: Some(format!("c{seq}")),
                            sow_key: seq.is_multiple_of(2).then(|| "k".to_owned()),
                            ..MessageOptions::default()
                        })),
                    };
                    s.append(m.clone()).unwrap();
                    model.push_back(m);
                    last = seq;
                }
                Op::Burst { count, len } => {
                    for _ in 0..count {
                        last += 1;
                        let m = StoredMessage {
                            seq: last,
                            data: body(last, len),
                            ..msg(last)
                        };
                        s.append(m.clone()).unwrap();
                        model.push_back(m);
                    }
                }
                Op::Discard(n) => {
                    let up_to = model.get(n).map_or(last + 3, |m| m.seq);
                    let before = model.len();
                    model.retain(|m| m.seq > up_to);
                    prop_assert_eq!(s.discard_up_to(up_to).unwrap(), before - model.len());
                    discarded = discarded.max(up_to);
                }
                Op::Retract(n) => {
                    let from = model
                        .get(model.len().saturating_sub(n.saturating_add(1)))
                        .map_or(last + 1, |m| m.seq);
                    let before = model.len();
                    model.retain(|m| m.seq < from);
                    prop_assert_eq!(s.retract(from).unwrap(), before - model.len());
                }
                Op::Read(n) => {
                    let at = model.get(n).map_or(last + 1, |m| m.seq);
                    prop_assert_eq!(s.get(at), model.get(n).map(StoredMessage::view));
                    prop_assert!(s.get(at + 1_000_000).is_none());
                    prop_assert!(s
                        .iter_from(at)
                        .eq(model.iter().filter(|m| m.seq >= at).map(StoredMessage::view)));
                    // Between two held sequences (a gap) finds nothing, iterates from the next.
                    if at > 1 && !model.iter().any(|m| m.seq == at - 1) {
                        prop_assert!(s.get(at - 1).is_none());
                    }
                }
            }
            prop_assert_eq!(s.last_assigned(), last);
            prop_assert_eq!(s.last_discarded(), discarded);
            check(&s, &model)?;
        }
    }
}
