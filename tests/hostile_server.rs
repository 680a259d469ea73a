//! Hostile input from a server: the client must never panic, must report a typed error, must
//! re-establish the connection, and must keep its store intact: every stored message is
//! replayed and acknowledged exactly once on the next (correct) connection.
//!
//! Each test runs a scripted peer (`tests/hostile/mod.rs`) that misbehaves once on its first
//! connection and is a correct server afterwards.

mod hostile;
mod support;

use std::time::Duration;

use actix::Addr;
use actix_amps::client::{
    Backoff, ClientActor, ClientConfig, ConnectionEvent, GetStats, Publish, PublishFlush,
    ReconnectPolicy, UnexpectedKind,
};
use actix_amps::error::{ConnectError, ProtocolError};
use actix_amps::protocol::Command;
use hostile::{persisted_ack, raw_frame, After, HostilePeer, LogonReply, Script};
use support::{Event, Events, WAIT};

/// Messages published before the misbehaviour.
const N: usize = 10;

/// The client's frame limit in these tests.
const MAX_FRAME: usize = 64 * 1024;

fn client_config(name: &str, peer: &HostilePeer) -> ClientConfig {
    ClientConfig::new(name)
        .uri(&peer.uri())
        .expect("valid uri")
        .heartbeat(None)
        .max_frame(MAX_FRAME)
        .logon_timeout(Duration::from_secs(5))
        .reconnect(ReconnectPolicy::new().backoff(Backoff::Fixed(Duration::from_millis(20))))
}

fn script(act: fn(&[u64]) -> Vec<u8>, after: After) -> Script {
    Script {
        first_logon: LogonReply::Correct,
        later_logon: LogonReply::Correct,
        wait_for: N,
        act,
        after,
    }
}

/// Starts a client against `peer`, subscribes to its events and publishes `N` messages;
/// returns the client, the events and every sequence it assigned.
async fn start(name: &str, peer: &HostilePeer) -> (Addr<ClientActor>, Events, Vec<u64>) {
    let client = client_config(name, peer).start().expect("client starts");
    let events = Events::new();
    events.subscribe_connection(&client).await;
    events.subscribe_unexpected(&client).await;
    let seqs = publish_n(&client).await;
    (client, events, seqs)
}

/// Publishes `N` messages to `orders`; returns the sequence of each.
async fn publish_n(client: &Addr<ClientActor>) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 0..N {
        let seq = client
            .send(Publish::new("orders", format!(r#"{{"id":{i}}}"#)))
            .await
            .expect("client alive")
            .expect("stored")
            .expect("a sequence");
        seqs.push(seq);
    }
    seqs
}

/// Waits for the disconnect caused by the misbehaviour and returns its typed protocol error.
async fn protocol_disconnect(events: &mut Events) -> std::sync::Arc<ConnectError> {
    match events
        .until_connection(|e| matches!(e, ConnectionEvent::Disconnected { .. }))
        .await
    {
        ConnectionEvent::Disconnected {
            error: Some(error),
            reason,
        } => {
            assert!(
                matches!(&*error, ConnectError::Protocol { .. }),
                "expected a protocol error, got {error:?} ({reason})"
            );
            error
        }
        other => panic!("disconnect without a typed error: {other:?}"),
    }
}

fn protocol_source(e: &ConnectError) -> &ProtocolError {
    match e {
        ConnectError::Protocol { source, .. } => source,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// After the disconnect: the client logs on again, replays, and a flush proves everything was
/// acknowledged; the correct connection received exactly `expected`, once each, in order.
async fn assert_recovered(
    client: &Addr<ClientActor>,
    events: &mut Events,
    peer: &HostilePeer,
    expected: &[u64],
) {
    events
        .until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. }))
        .await;
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
    let stats = client
        .send(GetStats)
        .await
        .expect("client alive")
        .expect("client running");
    assert_eq!(
        (
            stats.published,
            stats.persisted,
            stats.failed,
            stats.unacknowledged
        ),
        (N as u64, N as u64, 0, 0),
        "{stats:?}"
    );
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(peer.connections(), 2, "exactly one reconnect");
    assert_eq!(peer.sequences(1), expected, "replayed in full, once each");
}

/// Runs one "misbehave, expect a typed protocol error, recover" case.
async fn misbehave_and_recover(
    name: &str,
    act: fn(&[u64]) -> Vec<u8>,
    after: After,
    check: impl Fn(&ProtocolError, &[u64]) -> bool,
) {
    let peer = HostilePeer::start(script(act, after)).await;
    let (client, mut events, seqs) = start(name, &peer).await;
    let error = protocol_disconnect(&mut events).await;
    let source = protocol_source(&error);
    assert!(check(source, &seqs), "unexpected error {source:?}");
    assert_recovered(&client, &mut events, &peer, &seqs).await;
}

#[actix_rt::test]
async fn garbage_bytes_are_a_protocol_error_and_the_store_is_replayed() {
    misbehave_and_recover(
        "hostile-garbage",
        |_| b"\x00\x00\x00\x0c\xde\xad\xbe\xef garbage".to_vec(),
        After::AwaitClose,
        |e, _| matches!(e, ProtocolError::MalformedHeader { .. }),
    )
    .await;
}

#[actix_rt::test]
async fn a_frame_over_the_limit_is_refused_before_it_is_buffered() {
    misbehave_and_recover(
        "hostile-oversized",
        // Only the length prefix (1 MiB announced) and a few bytes: the client must not wait
        // for (or allocate) the rest.
        |_| {
            let mut v = (1u32 << 20).to_be_bytes().to_vec();
            v.extend_from_slice(br#"{"c":"ack""#);
            v
        },
        After::AwaitClose,
        |e, _| {
            matches!(e, ProtocolError::FrameTooLarge { len, max } if *len == 1 << 20 && *max == MAX_FRAME)
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_header_that_is_not_json_is_a_protocol_error() {
    misbehave_and_recover(
        "hostile-not-json",
        |_| raw_frame(b"c=ack a=persisted s=1"),
        After::AwaitClose,
        |e, _| matches!(e, ProtocolError::MalformedHeader { .. }),
    )
    .await;
}

#[actix_rt::test]
async fn an_invalid_escape_is_a_protocol_error_and_discards_nothing() {
    // Were this ack obeyed it would discard the whole store.
    misbehave_and_recover(
        "hostile-bad-escape",
        |seqs| {
            let last = seqs.last().copied().unwrap_or(0);
            raw_frame(
                format!(r#"{{"c":"ack","a":"persisted","status":"succ\xess","s":{last}}}"#)
                    .as_bytes(),
            )
        },
        After::AwaitClose,
        |e, _| matches!(e, ProtocolError::MalformedHeader { .. }),
    )
    .await;
}

#[actix_rt::test]
async fn a_persisted_ack_above_every_assigned_sequence_discards_nothing() {
    misbehave_and_recover(
        "hostile-ack-beyond",
        |seqs| persisted_ack(seqs.last().copied().unwrap_or(0) + 1000),
        After::AwaitClose,
        |e, seqs| {
            let last = *seqs.last().unwrap();
            matches!(e, ProtocolError::AckBeyondAssigned { seq, highest } if *seq == last + 1000 && *highest == last)
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_persisted_ack_going_backwards_is_a_protocol_error() {
    let peer = HostilePeer::start(script(
        |seqs| {
            let mut v = persisted_ack(seqs[1]);
            v.extend_from_slice(&persisted_ack(seqs[0]));
            v
        },
        After::AwaitClose,
    ))
    .await;
    let (client, mut events, seqs) = start("hostile-backwards", &peer).await;
    let error = protocol_disconnect(&mut events).await;
    assert!(
        matches!(
            protocol_source(&error),
            ProtocolError::AckWentBackwards { seq, previous } if *seq == seqs[0] && *previous == seqs[1]
        ),
        "{error:?}"
    );
    // The first ack was valid: its two messages are persisted; the rest is replayed.
    assert_recovered(&client, &mut events, &peer, &seqs[2..]).await;
}

#[actix_rt::test]
async fn a_server_closing_mid_frame_loses_nothing() {
    misbehave_and_recover(
        "hostile-mid-frame",
        |seqs| {
            let ack = persisted_ack(*seqs.last().unwrap());
            ack[..ack.len() / 2].to_vec()
        },
        After::Close,
        |e, seqs| {
            let full = persisted_ack(*seqs.last().unwrap()).len();
            matches!(e, ProtocolError::Truncated { have, need } if *have == full / 2 && *need == full)
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_logon_last_sequence_at_u64_max_is_refused_without_panicking() {
    let mut s = script(|_| Vec::new(), After::AwaitClose);
    s.first_logon = LogonReply::Fields {
        bm: Some(format!("1|{}|", u64::MAX)),
        s: Some(u64::MAX),
    };
    // The refused logon sends nothing: the first connection never receives a publish.
    s.wait_for = usize::MAX;
    let peer = HostilePeer::start(s).await;
    let (client, mut events, seqs) = start("hostile-logon-max", &peer).await;
    let error = protocol_disconnect(&mut events).await;
    assert!(
        matches!(
            protocol_source(&error),
            ProtocolError::LastSequenceOutOfRange { last } if *last == u64::MAX
        ),
        "{error:?}"
    );
    events
        .until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. }))
        .await;
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
    let stats = client
        .send(GetStats)
        .await
        .expect("client alive")
        .expect("client running");
    assert_eq!((stats.persisted, stats.unacknowledged), (N as u64, 0));
    assert_eq!(peer.connections(), 2);
    assert_eq!(peer.sequences(1), seqs);
}

#[actix_rt::test]
async fn a_logon_ack_without_bm_or_s_means_last_sequence_zero_and_replays_everything() {
    let mut s = script(|_| Vec::new(), After::Close);
    s.later_logon = LogonReply::Fields { bm: None, s: None };
    let peer = HostilePeer::start(s).await;
    let (client, mut events, seqs) = start("hostile-logon-bare", &peer).await;
    // The first connection closes cleanly after receiving everything, unacknowledged.
    match events
        .until_connection(|e| matches!(e, ConnectionEvent::Disconnected { .. }))
        .await
    {
        ConnectionEvent::Disconnected { error: None, .. } => {}
        other => panic!("a clean close has no error: {other:?}"),
    }
    let logged_on = events
        .until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. }))
        .await;
    assert!(
        matches!(
            logged_on,
            ConnectionEvent::LoggedOn {
                server_last_sequence: 0
            }
        ),
        "{logged_on:?}"
    );
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
    let stats = client
        .send(GetStats)
        .await
        .expect("client alive")
        .expect("client running");
    assert_eq!((stats.persisted, stats.unacknowledged), (N as u64, 0));
    assert_eq!(peer.sequences(0), seqs, "first connection got everything");
    assert_eq!(peer.sequences(1), seqs, "and all of it was replayed");
}

/// Drains what the collector has now and asserts no disconnect is among it.
fn assert_no_disconnect(events: &mut Events) {
    while let Ok(e) = events.rx.try_recv() {
        if let Event::Connection(ConnectionEvent::Disconnected { reason, .. }) = e {
            panic!("unexpected disconnect: {reason}");
        }
    }
}

#[actix_rt::test]
async fn an_unknown_command_goes_to_last_chance_without_a_reconnect() {
    let peer = HostilePeer::start(script(
        |_| raw_frame(br#"{"c":"frobnicate","t":"orders","cid":"x1"}"#),
        After::BeGood,
    ))
    .await;
    let (client, mut events, seqs) = start("hostile-unknown-command", &peer).await;
    let u = events.next_unexpected().await;
    assert_eq!(u.kind, UnexpectedKind::Unclaimed);
    assert_eq!(
        u.frame.header.command,
        Some(Command::Other("frobnicate".into()))
    );
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
    let stats = client
        .send(GetStats)
        .await
        .expect("client alive")
        .expect("client running");
    assert_eq!(
        (stats.persisted, stats.unacknowledged, stats.reconnects),
        (N as u64, 0, 0)
    );
    assert_no_disconnect(&mut events);
    assert_eq!(peer.connections(), 1);
    assert_eq!(peer.sequences(0), seqs);
}

#[actix_rt::test]
async fn acks_for_command_ids_nobody_waits_for_go_to_last_chance() {
    let peer = HostilePeer::start(script(
        |_| {
            let mut v = raw_frame(
                br#"{"c":"ack","cid":"nobody-waits","a":"processed","status":"success"}"#,
            );
            // An ack with no cid that is not a persisted ack is unclaimed too.
            v.extend(raw_frame(br#"{"c":"ack","a":"stats","matches":1}"#));
            v
        },
        After::BeGood,
    ))
    .await;
    let (client, mut events, seqs) = start("hostile-unknown-cid", &peer).await;
    let u = events.next_unexpected().await;
    assert_eq!(u.kind, UnexpectedKind::UnknownCommandId);
    assert_eq!(u.frame.header.cid.as_deref(), Some("nobody-waits"));
    let u = events.next_unexpected().await;
    assert_eq!(u.kind, UnexpectedKind::Unclaimed);
    assert_eq!(u.frame.header.matches, Some(1));
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
    assert_no_disconnect(&mut events);
    assert_eq!(peer.sequences(0), seqs);
}

#[actix_rt::test]
async fn an_ack_with_whitespace_and_valid_escapes_is_accepted() {
    let peer = HostilePeer::start(script(
        |seqs| {
            let last = seqs.last().copied().unwrap_or(0);
            raw_frame(
                format!(
                    "{{ \"c\" :\t\"ack\" ,\r\n \"a\": \"persisted\", \"status\":\"succ\\u0065ss\", \"note\": {{\"k\\/\": [1, \"\\n\"]}}, \"s\" : {last} }}"
                )
                .as_bytes(),
            )
        },
        After::BeGood,
    ))
    .await;
    let (client, mut events, seqs) = start("hostile-odd-json", &peer).await;
    // The odd ack alone acknowledges everything: no flush needed to see it.
    support::wait_stats(&client, |s| s.persisted == N as u64).await;
    client
        .send(PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
    let stats = client
        .send(GetStats)
        .await
        .expect("client alive")
        .expect("client running");
    assert_eq!(
        (stats.persisted, stats.unacknowledged, stats.reconnects),
        (N as u64, 0, 0)
    );
    assert_no_disconnect(&mut events);
    assert_eq!(peer.connections(), 1);
    assert_eq!(peer.sequences(0), seqs);
}

/// A write's persisted failure ack that carries a command id (AMPS echoes the `cid` a write was
/// sent with) is the store's: it is enriched and reported as a failed write, not taken for an
/// ack nobody waits for.
#[actix_rt::test]
async fn a_persisted_failure_with_a_command_id_is_a_failed_write() {
    let peer = HostilePeer::start(script(
        |seqs| {
            raw_frame(
                format!(
                    r#"{{"c":"ack","cid":"echoed-by-server","a":"persisted","status":"failure","reason":"not entitled","s":{}}}"#,
                    seqs[3]
                )
                .as_bytes(),
            )
        },
        After::BeGood,
    ))
    .await;
    let client = client_config("hostile-cid-failure", &peer)
        .start()
        .expect("client starts");
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    events.subscribe_unexpected(&client).await;
    events.subscribe_failed(&client).await;
    let seqs = publish_n(&client).await;
    let f = events.next_failed().await;
    assert_eq!(f.sequence, seqs[3]);
    assert_eq!(f.topic(), Some("orders"), "enriched from the store");
    let report = client
        .send(PublishFlush { timeout: WAIT })
        .await
        .expect("client alive")
        .expect("flush completes");
    assert_eq!(report.sequences, [seqs[3]], "{report:?}");
    assert_no_disconnect(&mut events);
    events.assert_quiet(Duration::from_millis(50)).await;
}
