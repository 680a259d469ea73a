//! Server limits against hostile clients: a connection cap (`max_connections`, refused at
//! accept with a `too many connections` answer) and a bound on each connection's unsent output (`max_unsent_bytes`: a client that
//! keeps sending but never reads its acks is disconnected, and the server's queue for it never
//! grows past the bound plus one read's worth of replies).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use actix_amps::protocol::{encode_parts, AckTypes, Command, Header};
use actix_amps::server::{FsyncPolicy, ServerHandle};
use bytes::BytesMut;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// The unsent-output bound used by these tests.
const MAX_UNSENT: usize = 64 * 1024;

/// What a connection's queue may exceed the bound by: the replies to one read's worth of input
/// (the session reads at most 64 KiB per turn, and each request here is answered by one ack of
/// under twice its size).
const ONE_TURN: usize = 256 * 1024;

/// Polls `pred` on the server's stats until it holds, bounded by `WAIT`.
async fn wait_stats(
    server: &ServerHandle,
    pred: impl Fn(&actix_amps::server::ServerStats) -> bool,
) -> actix_amps::server::ServerStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = server.stats();
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server stats never matched: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connects with a tiny receive buffer, so the kernel absorbs little of what the server sends.
async fn connect_small(addr: SocketAddr) -> Conn {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream: TcpStream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    Conn::from_stream(stream)
}

/// Logs on, then sends `make(i)` frames in batches without ever reading, until the server
/// drops the connection (a write fails) or has counted the disconnect. Bounded in bytes and
/// time: the test fails if the server keeps taking input without disconnecting.
async fn flood_without_reading(server: &ServerHandle, name: &str, make: impl Fn(u64) -> Header) {
    let mut c = connect_small(server.addr()).await;
    c.logon(name).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent = 0usize;
    let mut i = 0u64;
    loop {
        if server.stats().slow_consumer_disconnects > 0 {
            break;
        }
        assert!(
            sent < 512 << 20,
            "sent {sent} bytes without being disconnected"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "not disconnected within {WAIT:?} ({sent} bytes sent)"
        );
        let mut batch = BytesMut::new();
        for _ in 0..1000 {
            i += 1;
            encode_parts(&make(i), b"{\"id\":1}", &mut batch);
        }
        match tokio::time::timeout(Duration::from_secs(1), c.stream.write_all(&batch)).await {
            Ok(Ok(())) => sent += batch.len(),
            // The server closed the socket: the write fails (reset or broken pipe).
            Ok(Err(_)) => break,
            // Blocked: the server stopped reading; its counter decides.
            Err(_) => {}
        }
    }
    let stats = wait_stats(server, |s| {
        s.slow_consumer_disconnects == 1 && s.connections == 0
    })
    .await;
    assert!(
        stats.peak_unsent_bytes <= MAX_UNSENT + ONE_TURN,
        "queue grew to {} bytes (bound {MAX_UNSENT})",
        stats.peak_unsent_bytes
    );
    assert!(
        stats.peak_unsent_bytes > MAX_UNSENT,
        "the bound was what disconnected it: {stats:?}"
    );
}

/// The server still serves well-behaved clients.
async fn still_serves(server: &ServerHandle, name: &str) {
    let mut c = Conn::connect(server.addr()).await;
    c.logon(name).await;
    c.send(&publish("after", 1), b"{\"id\":1}").await;
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    c.recv_until(|f| is_cid(f, "f")).await;
}

#[tokio::test]
async fn a_client_sending_flushes_without_reading_is_disconnected_and_bounded() {
    let (_dir, server) = start(|c| c.max_unsent_bytes(MAX_UNSENT).fsync(FsyncPolicy::Never));
    flood_without_reading(&server, "no-reader-flush", |i| Header {
        command: Some(Command::Flush),
        cid: Some(format!("f{i}")),
        ack_type: AckTypes::PROCESSED,
        ..Header::default()
    })
    .await;
    still_serves(&server, "well-behaved-1").await;
}

#[tokio::test]
async fn a_client_publishing_with_acks_without_reading_is_disconnected_and_bounded() {
    let (_dir, server) = start(|c| c.max_unsent_bytes(MAX_UNSENT).fsync(FsyncPolicy::Never));
    flood_without_reading(&server, "no-reader-publish", |i| Header {
        command: Some(Command::Publish),
        topic: Some("flood".into()),
        ack_type: AckTypes::PROCESSED.with(actix_amps::protocol::AckType::Persisted),
        seq: Some(i),
        ..Header::default()
    })
    .await;
    still_serves(&server, "well-behaved-2").await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_with_a_reason() {
    let (_dir, server) = start(|c| c.max_connections(2));
    let mut a = Conn::connect(server.addr()).await;
    a.logon("cap-a").await;
    let mut b = Conn::connect(server.addr()).await;
    b.logon("cap-b").await;

    let mut refused = Conn::connect(server.addr()).await;
    refused.send(&logon("cap-refused"), b"").await;
    let frames = refused.expect_closed(WAIT).await;
    assert_eq!(frames.len(), 1, "one answer, then closed: {frames:?}");
    assert_eq!(
        frames[0].header.reason,
        Some(actix_amps::protocol::Reason::TooManyConnections)
    );
    let stats = server.stats();
    assert_eq!((stats.refused_connections, stats.connections), (1, 2));

    // The open ones are unaffected.
    a.send(&flush("fa", AckTypes::PROCESSED), b"").await;
    a.recv_until(|f| is_cid(f, "fa")).await;

    // Closing one makes room again (the session ends asynchronously: retry, bounded).
    drop(b);
    wait_stats(&server, |s| s.connections == 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = Conn::connect(server.addr()).await;
        c.send(&logon("cap-c"), b"").await;
        match c.recv_within(WAIT).await {
            Ok(Some(ack)) => {
                assert_eq!(ack.header.command, Some(Command::Ack));
                break;
            }
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "no room after a connection closed"
            ),
        }
    }
}

#[test]
fn cli_serve_takes_the_limits_and_logs_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(env!("CARGO_BIN_EXE_actix-amps"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--max-connections", "1", "--max-unsent-bytes", "65536"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("actix-amps: listening on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            if line.contains("too many connections") {
                let _ = tx.send("refused".into());
            }
            lines.push(line);
        }
        lines
    });
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve prints its address")
        .parse()
        .expect("an address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut first = Conn::connect(addr).await;
        first.logon("cli-cap").await;
        let mut second = Conn::connect(addr).await;
        second.expect_closed(WAIT).await;
    });
    let logged = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let lines = reader.join().unwrap();
    assert_eq!(logged.as_deref(), Ok("refused"), "{lines:#?}");
}
