//! SIGKILL of `actix-amps serve` in the middle of a stream of writes with a subscriber
//! attached: every message the subscriber received must still be in the log after the crash
//! (a subscriber never sees a write that a crash could undo), and a bookmark subscription
//! after the restart resumes exactly after the last message it had.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use actix_amps::protocol::AckType;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_actix-amps");

/// Starts `serve` on `listen` and returns it with the address it printed.
fn serve(dir: &std::path::Path, listen: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen, "--data"])
        .arg(dir)
        .args(["--fsync", "never"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("actix-amps: listening on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve prints its address");
    (child, addr.parse().expect("an address"))
}

fn n(f: &actix_amps::protocol::Frame) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
    v["n"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_subscriber_saw_survives_a_sigkill_and_resumes_by_bookmark() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path(), "127.0.0.1:0");
    let mut sub = Conn::connect(addr).await;
    sub.logon("watcher").await;
    sub.send_json(
        r#"{"c":"subscribe","t":"orders","cid":"s","a":"processed","sub_id":"S"}"#,
        b"",
    )
    .await;
    assert!(sub.recv().await.is_ack_of(AckType::Processed));
    let mut p = Conn::connect(addr).await;
    p.logon("pub").await;
    // Writes flow on their own task; the subscriber reads until it has a few hundred.
    let writer = tokio::spawn(async move {
        for s in 1..=200_000u64 {
            p.send(&publish("orders", s), format!(r#"{{"n":{s}}}"#).as_bytes())
                .await;
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 500 {
        let f = sub.recv().await;
        seen.push((n(&f), f.header.bookmark.clone().unwrap()));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // Drain what was already on the subscriber's socket.
    while let Ok(Some(f)) = sub.recv_within(Duration::from_secs(1)).await {
        seen.push((n(&f), f.header.bookmark.clone().unwrap()));
    }
    writer.abort();
    let _ = writer.await;

    // After the crash: a replay of everything the log kept.
    let (mut child, addr) = serve(dir.path(), "127.0.0.1:0");
    let mut r = Conn::connect(addr).await;
    r.logon("replayer").await;
    r.send_json(
        r#"{"c":"subscribe","t":"orders","cid":"r","a":"processed,completed","sub_id":"R","bookmark":"0"}"#,
        b"",
    )
    .await;
    assert!(r.recv().await.is_ack_of(AckType::Processed));
    let mut kept = BTreeSet::new();
    loop {
        let f = r.recv().await;
        if f.is_ack_of(AckType::Completed) {
            break;
        }
        kept.insert(n(&f));
    }
    for (m, _) in &seen {
        assert!(
            kept.contains(m),
            "message {m} was delivered, then lost in the crash"
        );
    }
    // Resume after the last message the subscriber had: exactly what follows it in the log.
    let (last, bm) = seen.last().unwrap().clone();
    let mut again = Conn::connect(addr).await;
    again.logon("watcher").await;
    again
        .send_json(
            &format!(r#"{{"c":"subscribe","t":"orders","cid":"a","a":"processed,completed","sub_id":"S","bookmark":"{bm}"}}"#),
            b"",
        )
        .await;
    assert!(again.recv().await.is_ack_of(AckType::Processed));
    let mut resumed = Vec::new();
    loop {
        let f = again.recv().await;
        if f.is_ack_of(AckType::Completed) {
            break;
        }
        resumed.push(n(&f));
    }
    let expected: Vec<u64> = kept.iter().copied().filter(|m| *m > last).collect();
    assert_eq!(resumed, expected);
    child.kill().ok();
    let _ = child.wait();
}
