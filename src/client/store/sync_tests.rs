//! Unit tests of the two-phase group commit: a sync the store started completes later
//! ([`PublishState::synced`]), as on the file store's I/O thread.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use super::state::{Effect, Limits, Outcome, PublishState, WriteMode};
use super::{MemoryStore, Operation, Store, StoredMessage, SyncStart};
use crate::client::config::FullPolicy;
use crate::client::internal::NewWrite;
use crate::error::{PublishError, StoreError};

/// A durable store whose syncs complete when the test says so.
struct LaterStore {
    mem: MemoryStore,
    started: bool,
    outcome: Arc<Mutex<Option<Result<(), StoreError>>>>,
}

impl Store for LaterStore {
    reads_from_memory!(mem);
    fn append(&mut self, msg: StoredMessage) -> Result<(), StoreError> {
        self.mem.append(msg)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn start_sync(&mut self) -> SyncStart {
        assert!(!self.started, "one sync at a time");
        self.started = true;
        SyncStart::Started
    }
    fn poll_sync(&mut self) -> Option<Result<(), StoreError>> {
        let r = self.outcome.lock().unwrap().take()?;
        self.started = false;
        Some(r)
    }
    fn discard_up_to(&mut self, up_to: u64) -> Result<usize, StoreError> {
        self.mem.discard_up_to(up_to)
    }
    fn retract(&mut self, from: u64) -> Result<usize, StoreError> {
        self.mem.retract(from)
    }
    fn needs_sync(&self) -> bool {
        true
    }
    fn is_durable(&self) -> bool {
        true
    }
}

type Outcomes = Arc<Mutex<Option<Result<(), StoreError>>>>;

fn state() -> (PublishState<u64, u64>, Outcomes) {
    let outcome = Outcomes::default();
    let store = LaterStore {
        mem: MemoryStore::new(),
        started: false,
        outcome: outcome.clone(),
    };
    let limits = Limits {
        max_messages: 100,
        max_bytes: 1 << 20,
        when_full: FullPolicy::Wait,
        max_frame: 1 << 20,
        error_on_publish_gap: false,
    };
    (PublishState::new(Some(Box::new(store)), limits, 1), outcome)
}

fn write(s: &mut PublishState<u64, u64>, reply: u64, body: &str) {
    let w = NewWrite {
        operation: Operation::Publish,
        topic: "t".into(),
        data: Bytes::from(body.to_owned()),
        options: None,
    };
    let outcome = s.write(vec![w], None, WriteMode::Awaited, Instant::now());
    assert!(matches!(outcome, Outcome::Pending), "{outcome:?}");
    s.attach(reply);
}

/// The effects the events so far left (also used by the other state-machine unit tests).
pub(super) fn effects(s: &mut PublishState<u64, u64>) -> Vec<Effect<u64, u64>> {
    let mut e = Vec::new();
    s.take_effects(&mut e);
    e
}

/// One answer: the reply and the stored range, or the error's text.
type Answer = (u64, Result<(u64, u64), String>);

/// The answers among `effects`.
fn answers(effects: &[Effect<u64, u64>]) -> Vec<Answer> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Answer { reply, result } => Some((
                *reply,
                result
                    .as_ref()
                    .map(|r| r.expect("a store assigns sequences"))
                    .map_err(PublishError::to_string),
            )),
            _ => None,
        })
        .collect()
}

/// What the writer of connection 1 would take now.
fn outbound(s: &mut PublishState<u64, u64>) -> String {
    taken(s, 1)
}

fn taken(s: &mut PublishState<u64, u64>, epoch: u64) -> String {
    let mut frames = Vec::new();
    s.take_outbound(epoch, &mut frames);
    frames
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

#[test]
fn a_write_is_answered_and_sent_only_when_its_sync_completes() {
    let (mut s, outcome) = state();
    s.logged_on(1, 0, Instant::now()).unwrap();
    effects(&mut s);
    write(&mut s, 7, "first");
    s.commit(Instant::now());
    assert!(s.sync_in_flight());
    assert!(answers(&effects(&mut s)).is_empty(), "not durable yet");
    assert_eq!(
        outbound(&mut s),
        "",
        "a durable store sends only what is on disk"
    );

    // A wake before the sync finished changes nothing.
    s.synced(Instant::now());
    assert!(answers(&effects(&mut s)).is_empty() && s.sync_in_flight());

    *outcome.lock().unwrap() = Some(Ok(()));
    s.synced(Instant::now());
    assert!(!s.sync_in_flight());
    assert_eq!(answers(&effects(&mut s)), [(7, Ok((1, 1)))]);
    assert!(outbound(&mut s).contains("first"));
}

#[test]
fn writes_admitted_during_a_sync_go_in_the_next_one() {
    let (mut s, outcome) = state();
    s.logged_on(1, 0, Instant::now()).unwrap();
    write(&mut s, 1, "a");
    s.commit(Instant::now());
    write(&mut s, 2, "b");
    write(&mut s, 3, "c");
    s.commit(Instant::now());
    effects(&mut s);
    *outcome.lock().unwrap() = Some(Ok(()));
    s.synced(Instant::now());
    // The first sync answers its write and starts the next for the two behind it.
    assert_eq!(answers(&effects(&mut s)), [(1, Ok((1, 1)))]);
    assert!(s.sync_in_flight());
    let sent = outbound(&mut s);
    assert!(sent.contains('a') && !sent.contains('b'), "{sent}");
    *outcome.lock().unwrap() = Some(Ok(()));
    s.synced(Instant::now());
    assert_eq!(
        answers(&effects(&mut s)),
        [(2, Ok((2, 2))), (3, Ok((3, 3)))]
    );
    let sent = outbound(&mut s);
    assert!(sent.contains('b') && sent.contains('c'), "{sent}");
}

#[test]
fn a_failed_sync_refuses_its_writes_and_those_admitted_after_it() {
    let (mut s, outcome) = state();
    s.logged_on(1, 0, Instant::now()).unwrap();
    write(&mut s, 1, "a");
    s.commit(Instant::now());
    write(&mut s, 2, "b");
    effects(&mut s);
    *outcome.lock().unwrap() = Some(Err(StoreError::Io {
        path: "/store/00000000000000000001.seg".into(),
        source: std::io::Error::other("injected"),
    }));
    s.synced(Instant::now());
    let answered = answers(&effects(&mut s));
    assert_eq!(answered.len(), 2, "{answered:?}");
    for (_, result) in &answered {
        let text = result.as_ref().unwrap_err();
        assert!(text.contains("00000000000000000001.seg"), "{text}");
    }
    assert_eq!(outbound(&mut s), "", "a refused write is never sent");
    assert_eq!(s.stats().unacknowledged, 0, "retracted");
    assert!(!s.sync_in_flight());

    // Writes go on (after the retraction's room is offered to waiting writes): the next one
    // starts a sync of its own.
    s.resume(Instant::now());
    write(&mut s, 3, "c");
    s.commit(Instant::now());
    assert!(s.sync_in_flight());
    *outcome.lock().unwrap() = Some(Ok(()));
    s.synced(Instant::now());
    assert_eq!(answers(&effects(&mut s)), [(3, Ok((3, 3)))]);
}

#[test]
fn a_reconnect_while_a_sync_is_in_flight_sends_the_write_once_on_the_new_connection() {
    let (mut s, outcome) = state();
    s.logged_on(1, 0, Instant::now()).unwrap();
    write(&mut s, 1, "body-once");
    s.commit(Instant::now());
    s.connection_lost(1);
    s.logged_on(2, 0, Instant::now()).unwrap();
    effects(&mut s);
    assert_eq!(taken(&mut s, 2), "", "the replay holds only durable writes");
    *outcome.lock().unwrap() = Some(Ok(()));
    s.synced(Instant::now());
    assert_eq!(answers(&effects(&mut s)), [(1, Ok((1, 1)))]);
    assert!(
        s.take_out_signal(),
        "the writer is woken once the write is durable"
    );
    assert_eq!(taken(&mut s, 1), "", "nothing goes to the lost connection");
    assert_eq!(taken(&mut s, 2).matches("body-once").count(), 1);
}

/// The bodies of the frames the writer of connection 1 would take now, in order.
fn bodies(s: &mut PublishState<u64, u64>) -> Vec<String> {
    use tokio_util::codec::Decoder;
    let mut frames = Vec::new();
    s.take_outbound(1, &mut frames);
    let mut buf = bytes::BytesMut::new();
    for f in frames {
        buf.extend_from_slice(&f);
    }
    let mut codec = crate::protocol::AmpsCodec::default();
    let mut out = Vec::new();
    while let Some(frame) = codec
        .decode(&mut buf)
        .expect("the store encodes valid frames")
    {
        out.push(String::from_utf8_lossy(&frame.body).into_owned());
    }
    out
}

/// A live connection and writes `w1`..`w5` made durable by one sync (effects not yet taken).
fn five_durable_writes() -> (PublishState<u64, u64>, Outcomes) {
    let (mut s, outcome) = state();
    s.logged_on(1, 0, Instant::now()).unwrap();
    effects(&mut s);
    for (reply, body) in ["w1", "w2", "w3", "w4", "w5"].iter().enumerate() {
        write(&mut s, reply as u64, body);
    }
    s.commit(Instant::now());
    *outcome.lock().unwrap() = Some(Ok(()));
    s.synced(Instant::now());
    (s, outcome)
}

#[test]
fn a_large_durable_batch_goes_out_a_slice_per_turn_in_order() {
    // Unit tests slice by 2 (`SEND_SLICE`).
    let (mut s, _outcome) = five_durable_writes();
    let first = effects(&mut s);
    assert_eq!(answers(&first).len(), 5, "every write is answered at once");
    let later =
        |e: &[Effect<u64, u64>]| e.iter().filter(|e| matches!(e, Effect::SendLater)).count();
    assert_eq!(later(&first), 1, "the rest waits for a later turn");
    assert_eq!(bodies(&mut s), ["w1", "w2"]);
    s.send_more();
    assert_eq!(later(&effects(&mut s)), 1);
    assert_eq!(bodies(&mut s), ["w3", "w4"]);
    s.send_more();
    assert_eq!(later(&effects(&mut s)), 0, "all sent");
    assert_eq!(bodies(&mut s), ["w5"]);
    s.send_more();
    assert!(bodies(&mut s).is_empty(), "nothing is sent twice");
}

#[test]
fn a_flush_goes_after_every_durable_write_and_a_replay_takes_the_unsent_slices() {
    let (mut s, outcome) = five_durable_writes();
    effects(&mut s);
    s.start_flush(
        9,
        Instant::now() + std::time::Duration::from_secs(1),
        Instant::now(),
    );
    // The flush waits for the last slice instead of encoding the rest of the batch now.
    let now = outbound(&mut s);
    assert!(!now.contains("\"c\":\"flush\""), "{now}");
    assert!(now.contains("w2") && !now.contains("w3"), "{now}");
    let mut sent = now;
    for _ in 0..2 {
        s.send_more();
        effects(&mut s);
        sent.push_str(&outbound(&mut s));
    }
    let flush_at = sent
        .find("\"c\":\"flush\"")
        .expect("the last slice sent the flush command");
    assert!(sent.rfind("w5").is_some_and(|w5| w5 < flush_at), "{sent}");
    assert_eq!(sent.matches("w3").count(), 1);

    // A reconnect in the middle of a batch: the replay holds the unsent slices once.
    write(&mut s, 10, "x1");
    write(&mut s, 11, "x2");
    write(&mut s, 12, "x3");
    s.commit(Instant::now());
    *outcome.lock().unwrap() = Some(Ok(()));
    s.synced(Instant::now());
    effects(&mut s);
    assert_eq!(bodies(&mut s), ["x1", "x2"]);
    s.connection_lost(1);
    s.logged_on(2, 0, Instant::now()).unwrap();
    s.send_more();
    let replay = taken(&mut s, 2);
    for body in ["w1", "w5", "x1", "x3"] {
        assert_eq!(replay.matches(body).count(), 1, "{body} in {replay}");
    }
}
