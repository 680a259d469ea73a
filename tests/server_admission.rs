//! Hostile clients, one behaviour at a time: the logon deadline, the pre-logon frame limit, the
//! pending-logon cap, the read deadline for a begun frame, the server-wide buffer budget and
//! the answers that tell a refused or closed client why (a failure ack to its logon, or a
//! closing notice). `tests/hostile_clients.rs` throws all of them at one server at once.

mod common;

use std::time::{Duration, Instant};

use actix_amps::protocol::{closing_reason, encode_parts, Command, Frame, Reason};
use actix_amps::server::{ServerHandle, ServerStats};
use bytes::BytesMut;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls the server's stats until `pred` holds (bounded by `WAIT`).
async fn wait_stats(server: &ServerHandle, pred: impl Fn(&ServerStats) -> bool) -> ServerStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = server.stats();
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never matched: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The reason of the closing notice among `frames` (the last frame the server sent).
fn notice_of(frames: &[Frame]) -> Option<Reason> {
    frames
        .last()
        .and_then(|f| closing_reason(&f.header))
        .cloned()
}

/// A flush on a logged-on connection is still answered: the connection is alive.
async fn still_alive(c: &mut Conn, cid: &str) {
    c.send(&flush(cid, actix_amps::protocol::AckTypes::PROCESSED), b"")
        .await;
    c.recv_until(|f| is_cid(f, cid)).await;
}

#[tokio::test]
async fn no_logon_in_time_closes_with_a_notice_but_idle_logged_on_connections_stay() {
    let deadline = Duration::from_millis(300);
    let (_dir, server) = start(|c| c.logon_timeout(deadline));
    let mut idle_logged_on = Conn::connect(server.addr()).await;
    idle_logged_on.logon("idle-but-logged-on").await;

    let started = Instant::now();
    let mut silent = Conn::connect(server.addr()).await;
    let frames = silent.expect_closed(WAIT).await;
    assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
    assert_eq!(notice_of(&frames), Some(Reason::LogonTimeout), "{frames:?}");

    // A trickle of bytes (slowloris) is no excuse either: the deadline is from accept.
    let started = Instant::now();
    let mut trickle = Conn::connect(server.addr()).await;
    let mut logon_bytes = BytesMut::new();
    encode_parts(&logon("trickle"), b"", &mut logon_bytes);
    let mut closed = None;
    for b in logon_bytes.iter().take(logon_bytes.len() - 1) {
        if trickle.stream.write_all(&[*b]).await.is_err() {
            break;
        }
        match trickle.recv_within(Duration::from_millis(50)).await {
            Err(()) => {}
            Ok(Some(f)) => {
                closed = Some(closing_reason(&f.header).cloned());
                break;
            }
            Ok(None) => break,
        }
        assert!(started.elapsed() < WAIT, "trickle never closed");
    }
    assert_eq!(closed, Some(Some(Reason::LogonTimeout)));
    assert!(started.elapsed() >= deadline);
    // Closing, they no longer count as waiting to log on.
    wait_stats(&server, |s| s.logon_timeouts == 2 && s.pending_logons == 0).await;

    // The logged-on connection sat idle well past the deadline, without heartbeats.
    tokio::time::sleep(deadline * 2).await;
    still_alive(&mut idle_logged_on, "alive").await;
}

#[tokio::test]
async fn a_frame_over_the_logon_limit_is_refused_before_it_is_buffered() {
    let (_dir, server) = start(|c| c.max_logon_frame(1024));
    // The announced length alone is enough to refuse it.
    let mut huge = Conn::connect(server.addr()).await;
    huge.send_raw(&(64u32 << 20).to_be_bytes()).await;
    huge.send_raw(&[b'{'; 100]).await;
    let frames = huge.expect_closed(WAIT).await;
    assert_eq!(notice_of(&frames), Some(Reason::MessageTooLarge));

    // A logon itself over the limit (a 2 KiB client name).
    let mut long = Conn::connect(server.addr()).await;
    long.send(&logon(&"n".repeat(2048)), b"").await;
    let frames = long.expect_closed(WAIT).await;
    assert_eq!(notice_of(&frames), Some(Reason::MessageTooLarge));

    // Garbage that is not a frame.
    let mut garbage = Conn::connect(server.addr()).await;
    garbage.send_raw(b"\0\0\0\x05hello").await;
    let frames = garbage.expect_closed(WAIT).await;
    assert_eq!(notice_of(&frames), Some(Reason::BadFrame));
    let stats = wait_stats(&server, |s| s.bad_frames == 3).await;
    assert!(
        stats.peak_buffered_bytes < 256 * 1024,
        "nothing big was buffered: {stats:?}"
    );

    // After logon, the message limit applies, not the logon limit.
    let mut c = Conn::connect(server.addr()).await;
    c.logon("big-after-logon").await;
    c.send(&publish("t", 1), &vec![b'x'; 100 * 1024]).await;
    still_alive(&mut c, "big-ok").await;
}

#[tokio::test]
async fn a_frame_begun_and_stalled_is_closed_after_the_frame_timeout() {
    let limit = Duration::from_millis(300);
    let (_dir, server) = start(|c| c.frame_timeout(limit));
    let mut stalled = Conn::connect(server.addr()).await;
    stalled.logon("stalls").await;
    let mut frame = BytesMut::new();
    encode_parts(&publish("t", 1), b"{\"id\":1}", &mut frame);
    let started = Instant::now();
    stalled.send_raw(&frame[..frame.len() / 2]).await;
    let frames = stalled.expect_closed(WAIT).await;
    assert!(started.elapsed() >= limit);
    assert_eq!(notice_of(&frames), Some(Reason::ReadTimeout));
    wait_stats(&server, |s| s.read_timeouts == 1).await;

    // Whole frames separated by silence longer than the limit are fine.
    let mut slow = Conn::connect(server.addr()).await;
    slow.logon("slow-but-whole").await;
    slow.send(&publish("t", 1), b"{}").await;
    tokio::time::sleep(limit * 2).await;
    still_alive(&mut slow, "whole").await;
}

#[tokio::test]
async fn waiting_connections_displace_the_oldest_and_real_logons_get_through() {
    let (_dir, server) = start(|c| c.max_pending_logons(4).logon_timeout(WAIT * 2));
    let mut first = Conn::connect(server.addr()).await;
    wait_stats(&server, |s| s.pending_logons == 1).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(Conn::connect(server.addr()).await);
    }
    wait_stats(&server, |s| s.pending_logons == 4).await;
    // One more: the oldest goes, with a notice.
    idle.push(Conn::connect(server.addr()).await);
    let frames = first.expect_closed(WAIT).await;
    assert_eq!(notice_of(&frames), Some(Reason::TooManyPendingLogons));

    // A crowd of idle connections never locks out a client that logs on at once.
    for _ in 0..40 {
        idle.push(Conn::connect(server.addr()).await);
    }
    for i in 0..5 {
        let mut real = Conn::connect(server.addr()).await;
        real.logon(&format!("real-{i}")).await;
        still_alive(&mut real, "real").await;
    }
    let stats = wait_stats(&server, |s| s.pending_logons <= 4).await;
    assert!(stats.displaced_pending_logons >= 41, "{stats:?}");
    assert_eq!(stats.logons_accepted, 5);
}

#[tokio::test]
async fn the_budget_closes_the_largest_buffer_holder_and_no_one_else() {
    let budget = 4 << 20;
    let (_dir, server) = start(|c| c.max_buffered_bytes(budget).max_message_size(16 << 20));
    // A holds a small half-sent frame.
    let mut small = Conn::connect(server.addr()).await;
    small.logon("small-holder").await;
    let mut small_frame = BytesMut::new();
    encode_parts(&publish("t", 1), &vec![b'a'; 256 * 1024], &mut small_frame);
    let half = small_frame.len() / 2;
    small.send_raw(&small_frame[..half]).await;
    wait_stats(&server, |s| s.buffered_bytes >= half).await;

    // B sends most of a 12 MiB frame: past the budget, B holds the most.
    let big = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut big = Conn::from_stream(big);
    big.logon("big-holder").await;
    let (mut rd, mut wr) = big.stream.into_split();
    let writer = tokio::spawn(async move {
        let mut frame = BytesMut::new();
        encode_parts(&publish("t", 1), &vec![b'b'; 12 << 20], &mut frame);
        // Stops when the server closes (the write fails) or after all but the last byte.
        let _ = wr.write_all(&frame[..frame.len() - 1]).await;
        wr
    });
    let mut got = BytesMut::new();
    let read = tokio::time::timeout(WAIT, async {
        while rd.read_buf(&mut got).await.map(|n| n > 0).unwrap_or(false) {}
    })
    .await;
    assert!(read.is_ok(), "the big holder was not closed");
    let mut frames = Vec::new();
    while got.len() >= 4 {
        let len = u32::from_be_bytes([got[0], got[1], got[2], got[3]]) as usize;
        let bytes = got.split_to(4 + len).split_off(4).freeze();
        frames.push(actix_amps::protocol::decode_frame(bytes).unwrap());
    }
    assert_eq!(notice_of(&frames), Some(Reason::MemoryBudgetExceeded));
    let _ = writer.await;
    let stats = wait_stats(&server, |s| s.budget_disconnects == 1).await;
    assert!(
        stats.peak_buffered_bytes < budget + (4 << 20),
        "overshoot bounded: {stats:?}"
    );

    // A was never told: it finishes its frame and is answered.
    small.send_raw(&small_frame[half..]).await;
    small
        .send(
            &flush("small-done", actix_amps::protocol::AckTypes::PERSISTED),
            b"",
        )
        .await;
    let frames = small.recv_until(|f| is_cid(f, "small-done")).await;
    assert!(frames.iter().any(is_persisted), "{frames:?}");
    assert_eq!(server.stats().budget_disconnects, 1);
}

#[tokio::test]
async fn over_the_connection_cap_a_logon_is_answered_too_many_connections() {
    let (_dir, server) = start(|c| c.max_connections(1));
    let mut a = Conn::connect(server.addr()).await;
    a.logon("only-one").await;
    let mut refused = Conn::connect(server.addr()).await;
    refused.send(&logon("one-too-many"), b"").await;
    let frames = refused.expect_closed(WAIT).await;
    let ack = frames.first().expect("an answer");
    assert_eq!(ack.header.command, Some(Command::Ack));
    assert_eq!(
        ack.header.cid.as_deref(),
        Some("auto0"),
        "answers the logon"
    );
    assert_eq!(ack.header.reason, Some(Reason::TooManyConnections));
    // A first frame that is not a logon gets the reason as a notice.
    let mut other = Conn::connect(server.addr()).await;
    other.send(&publish("t", 1), b"{}").await;
    let frames = other.expect_closed(WAIT).await;
    assert_eq!(notice_of(&frames), Some(Reason::TooManyConnections));
    assert_eq!(server.stats().refused_connections, 2);
    still_alive(&mut a, "a").await;
}
