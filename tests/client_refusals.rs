//! What a client sees when a server refuses or closes it: the reason, typed, in the actor
//! client's connection events and on the CLI's stderr; a reset is a disconnect, not a protocol
//! error; and no password reaches the CLI's output, however malformed the URI.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use actix_amps::client::{Backoff, ConnectionEvent, Publish, ReconnectPolicy, Shutdown};
use actix_amps::error::ConnectError;
use actix_amps::protocol::{
    closing_notice, decode_frame, encode_parts, AckTypes, Command, Header, Reason, Status,
};
use bytes::{Buf, BytesMut};
use support::{config, Events, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn bin() -> Process {
    Process::new(env!("CARGO_BIN_EXE_actix-amps"))
}

fn quick_retry() -> ReconnectPolicy {
    ReconnectPolicy::new().backoff(Backoff::Fixed(Duration::from_millis(20)))
}

fn refused_with(e: &ConnectionEvent, want: &Reason) -> bool {
    matches!(e, ConnectionEvent::AttemptFailed { error }
        if matches!(&**error, ConnectError::LogonRefused { reason, .. } if reason == want))
}

/// Logs on with a raw connection, retrying while the slot is still taken (a closed
/// connection frees it asynchronously); returns the logged-on connection.
async fn hold_the_only_slot(addr: std::net::SocketAddr) -> TcpStream {
    let mut logon = BytesMut::new();
    encode_parts(
        &Header {
            command: Some(Command::Logon),
            cid: Some("1".into()),
            client_name: Some("holder".into()),
            ack_type: AckTypes::PROCESSED,
            ..Header::default()
        },
        b"",
        &mut logon,
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "never logged on");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&logon).await.unwrap();
        let mut buf = BytesMut::new();
        let ack = tokio::time::timeout(WAIT, async {
            loop {
                if buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() >= 4 + len {
                        buf.advance(4);
                        return decode_frame(buf.split_to(len).freeze()).ok();
                    }
                }
                if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten();
        if ack.is_some_and(|a| a.header.status == Some(Status::Success)) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn over_the_connection_cap_the_client_reports_too_many_connections() {
    let server = TestServer::start(|c| c.max_connections(1));
    let holder = hold_the_only_slot(server.handle.addr()).await;
    let client = config("over-the-cap", &server)
        .reconnect(quick_retry())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    let e = events
        .until_connection(|e| refused_with(e, &Reason::TooManyConnections))
        .await;
    let ConnectionEvent::AttemptFailed { error } = e else {
        unreachable!()
    };
    assert!(
        error.to_string().contains("refused: too many connections"),
        "{error}"
    );
    // Room again: it logs on by itself.
    drop(holder);
    events
        .until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. }))
        .await;
    client.send(Shutdown).await.unwrap();

    // The CLI says so in its last line.
    let _holder = hold_the_only_slot(server.handle.addr()).await;
    let mut child = bin()
        .args(["publish", "--uri", &server.uri(), "--topic", "t"])
        .args([
            "--client-name",
            "cli-over-the-cap",
            "--flush-timeout",
            "600",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A publish that fails at once may exit before reading its input (a broken pipe).
    if let Err(e) = child.stdin.take().unwrap().write_all(b"x\n") {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("actix-amps: error:") && last.contains("too many connections"),
        "{err}"
    );
}

#[actix_rt::test]
async fn closed_over_the_memory_budget_the_client_reports_why() {
    let server = TestServer::start(|c| c.max_buffered_bytes(1 << 20));
    let client = config("budget-buster", &server)
        .reconnect(quick_retry())
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    events
        .until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. }))
        .await;
    client
        .send(Publish::new("t", vec![b'x'; 3 << 20]))
        .await
        .unwrap()
        .unwrap();
    let e = events
        .until_connection(|e| matches!(e, ConnectionEvent::Disconnected { .. }))
        .await;
    let ConnectionEvent::Disconnected { error, reason } = e else {
        unreachable!()
    };
    let error = error.expect("a typed error");
    assert!(
        matches!(&*error, ConnectError::ClosedByServer { reason, .. } if *reason == Reason::MemoryBudgetExceeded),
        "{error:?}"
    );
    assert!(reason.contains("memory budget exceeded"), "{reason}");
    client.send(Shutdown).await.unwrap();
    assert!(server.handle.stats().budget_disconnects >= 1);
}

/// A fake server that answers the first logon with `reply(cid)` (raw bytes; empty for none),
/// then, if `reset`, resets the connection. Later connections are answered with a success.
async fn fake_server(
    reply: fn(Option<String>) -> Vec<u8>,
    reset: bool,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("tcp://{}/amps/json", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = BytesMut::new();
            let logon = loop {
                if buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() >= 4 + len {
                        buf.advance(4);
                        break decode_frame(buf.split_to(len).freeze()).unwrap();
                    }
                }
                if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            };
            let cid = logon.header.cid.clone();
            if first {
                first = false;
                s.write_all(&reply(cid)).await.unwrap();
                if reset {
                    s.set_zero_linger().unwrap();
                    drop(s);
                } else {
                    // Keep it open; the client closes it.
                    tokio::spawn(async move {
                        let mut sink = [0u8; 1024];
                        while s.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
                    });
                }
                continue;
            }
            s.write_all(&success(cid)).await.unwrap();
            tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while s.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
            });
        }
    });
    (uri, task)
}

fn success(cid: Option<String>) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_parts(
        &Header {
            command: Some(Command::Ack),
            cid,
            ack_type: AckTypes::PROCESSED,
            status: Some(Status::Success),
            seq: Some(0),
            ..Header::default()
        },
        b"",
        &mut b,
    );
    b.to_vec()
}

fn client_for(uri: &str, name: &str) -> actix_amps::client::ClientConfig {
    actix_amps::client::ClientConfig::new(name)
        .uri(uri)
        .unwrap()
        .heartbeat(None)
        .reconnect(quick_retry())
}

#[actix_rt::test]
async fn a_closing_notice_during_logon_is_a_refused_logon() {
    let (uri, task) = fake_server(
        |_| {
            let mut b = BytesMut::new();
            encode_parts(&closing_notice(Reason::LogonTimeout), b"", &mut b);
            b.to_vec()
        },
        false,
    )
    .await;
    let client = client_for(&uri, "notice-at-logon").start().unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    events
        .until_connection(|e| refused_with(e, &Reason::LogonTimeout))
        .await;
    // And it tries again, and logs on.
    events
        .until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. }))
        .await;
    client.send(Shutdown).await.unwrap();
    task.abort();
}

#[actix_rt::test]
async fn a_reset_is_a_disconnect_not_a_protocol_error() {
    let (uri, task) = fake_server(success, true).await;
    let client = client_for(&uri, "reset-after-logon").start().unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    let mut seen = Vec::new();
    let disconnect = loop {
        let e = events.until_connection(|_| true).await;
        if let ConnectionEvent::Disconnected { .. } = &e {
            break e;
        }
        seen.push(e);
    };
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::LoggedOn { .. })),
        "{seen:?}"
    );
    let ConnectionEvent::Disconnected { reason, error } = disconnect else {
        unreachable!()
    };
    assert!(error.is_none(), "not a typed protocol error: {error:?}");
    assert!(
        reason.contains("connection lost") || reason.contains("closed"),
        "{reason}"
    );
    assert!(!reason.contains("protocol"), "{reason}");
    events
        .until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. }))
        .await;
    client.send(Shutdown).await.unwrap();
    task.abort();
}

/// A password in pieces (a naive parser cuts it at `/`): none may reach the output.
const PIECES: [&str; 2] = ["Hv4qSecret", "Wn8zSecret"];

fn assert_masked(what: &str, text: &str) {
    for p in PIECES {
        assert!(!text.contains(p), "{what} shows the password: {text}");
    }
}

#[test]
fn the_cli_never_prints_a_password_from_a_bad_uri() {
    let (a, b) = (PIECES[0], PIECES[1]);
    let bad = [
        format!("tcp://alice:{a}@127.0.0.1:notaport/amps/json"),
        format!("tcp://alice:{a}@a b:9007/amps/json"),
        format!("tcp://alice:{a}@127.0.0.1:9007/amps/j$on"),
        format!("tcp://alice:{a}%zz@127.0.0.1:9007/amps/json"),
        format!("http://alice:{a}@127.0.0.1:9007/amps/json"),
        format!("alice:{a}@127.0.0.1:9007/amps/json"),
        format!("tcp://alice:{a}/{b}@127.0.0.1:9007/amps/json"),
        format!("tcp://alice:{a}@127.0.0.1/amps/json"),
        format!("tcp://:{a}@127.0.0.1:9007/amps/json"),
    ];
    for uri in &bad {
        for cmd in [
            vec!["publish", "--topic", "t"],
            vec!["sow-delete", "--topic", "t", "--filter", "/id = 1"],
        ] {
            let out = bin()
                .args(&cmd)
                .args(["--uri", uri])
                .env("RUST_LOG", "trace")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(1), "{cmd:?} {uri}: {text}");
            assert!(text.contains("--uri"), "says which argument: {text}");
            assert_masked(&format!("{cmd:?} {uri}"), &text);
        }
    }
    // An argument clap did not expect is echoed by clap: masked too.
    let out = bin()
        .args(["publish", "--topic", "t", "--uri", "tcp://h:1"])
        .arg(format!("tcp://alice:{a} {b}@h:1"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unexpected argument"), "{err}");
    assert_masked("clap's error", &err);
}

#[test]
fn the_cli_never_prints_a_password_when_the_server_refuses_or_is_gone() {
    let server = TestServer::start(|c| c.user("alice", "right-password"));
    let uri = server
        .uri()
        .replace("tcp://", &format!("tcp://alice:{}@", PIECES[0]));
    let out = bin()
        .args([
            "publish",
            "--uri",
            &uri,
            "--topic",
            "t",
            "--flush-timeout",
            "500",
        ])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("auth failure"), "{err}");
    assert_masked("publish refused", &err);
    server.handle.stop();
    let out = bin()
        .args(["sow-delete", "--uri", &uri, "--topic", "t", "--keys", "1"])
        .args(["--timeout", "300"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_masked("sow-delete without a server", &err);
}

#[test]
fn the_server_logs_a_reset_as_a_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("actix-amps: listening on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
            if line.contains("client disconnected") {
                let _ = tx.send("disconnected".into());
            }
            lines.push(line);
        }
        lines
    });
    let addr: std::net::SocketAddr = rx.recv_timeout(WAIT).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut b = BytesMut::new();
        encode_parts(
            &Header {
                command: Some(Command::Logon),
                cid: Some("1".into()),
                client_name: Some("resets".into()),
                ack_type: AckTypes::PROCESSED,
                ..Header::default()
            },
            b"",
            &mut b,
        );
        // Half a frame after the logon, then a reset.
        encode_parts(&Header::default(), b"0123456789", &mut b);
        b.truncate(b.len() - 5);
        s.write_all(&b).await.unwrap();
        let mut ack = [0u8; 256];
        let _ = tokio::time::timeout(WAIT, s.read(&mut ack)).await;
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let seen = rx.recv_timeout(WAIT);
    let _ = child.kill();
    let _ = child.wait();
    let lines = reader.join().unwrap();
    assert_eq!(seen.as_deref(), Ok("disconnected"), "{lines:#?}");
    let text = lines.join("\n");
    assert!(!text.contains("bad frame"), "{text}");
    assert!(!text.contains("protocol error"), "{text}");
}
