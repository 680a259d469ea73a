//! Heartbeats: silence closes, idle server beats, beats are never echoed, freeze/thaw.

mod common;

use std::time::{Duration, Instant};

use actix_amps::protocol::{AckTypes, Command, Header};
use common::*;

fn hb(o: &str) -> Header {
    Header {
        command: Some(Command::Heartbeat),
        options: Some(o.into()),
        ..Header::default()
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_after_about_two_intervals() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("silent").await;
    c.send(&hb("start,1"), b"").await;
    let t0 = Instant::now();
    let frames = c.expect_closed(Duration::from_secs(4)).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3000),
        "{took:?}"
    );
    assert!(frames
        .iter()
        .all(|f| f.header.options.as_deref() == Some("beat")));
    assert!(!frames.is_empty(), "the idle server beat at least once");
}

#[tokio::test]
async fn the_server_beats_when_idle_and_never_echoes() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("beater").await;
    c.send(&hb("start,1"), b"").await;
    // The server's own beat comes after about one interval of sending nothing.
    let t0 = Instant::now();
    let f = c.recv().await;
    assert_eq!(f.header.options.as_deref(), Some("beat"));
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    // Client beats are not answered: beat every 200 ms; the server stays silent between its own
    // idle beats... and since each of our beats keeps us alive, the connection stays open.
    let t1 = Instant::now();
    let mut beats_from_server = 0;
    while t1.elapsed() < Duration::from_millis(900) {
        c.send(&hb("beat"), b"").await;
        if let Ok(Some(f)) = c.recv_within(Duration::from_millis(200)).await {
            assert_eq!(f.header.options.as_deref(), Some("beat"));
            beats_from_server += 1;
        }
    }
    assert!(
        beats_from_server <= 1,
        "server answered client beats: {beats_from_server}"
    );
    c.send(&flush("f", AckTypes::PROCESSED), b"").await;
    let f = c.recv_until(|f| is_cid(f, "f")).await;
    assert!(is_cid(f.last().unwrap(), "f"));
}

#[tokio::test]
async fn a_frozen_server_keeps_the_socket_but_says_nothing() {
    let (_dir, server) = start(|c| c);
    let mut c = Conn::connect(server.addr()).await;
    c.logon("frozen").await;
    server.freeze();
    c.send(&flush("f", AckTypes::PROCESSED), b"").await;
    // Nothing comes back, and the socket is not closed.
    match c.recv_within(Duration::from_millis(300)).await {
        Err(()) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    server.thaw();
    let f = c.recv().await;
    assert!(is_cid(&f, "f"));
}
