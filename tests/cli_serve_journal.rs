//! The CLI: `serve` as a child process, a raw publish, SIGINT, then `journal --json`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_amps::protocol::AckTypes;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_actix-amps");

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            panic!("child did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `serve` and returns it with the address it printed.
fn serve(dir: &std::path::Path) -> (Child, SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir)
        .args([
            "--sow",
            "^orders$=/id",
            "--ack-conflation",
            "2",
            "--user",
            "alice:s3cret",
        ])
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
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            lines.push(line);
        }
        lines
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve prints its address");
    (child, addr.parse().expect("an address"), reader)
}

#[tokio::test]
async fn serve_publish_sigint_then_journal_shows_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, reader) = serve(dir.path());

    let mut c = Conn::connect(addr).await;
    let mut h = logon("cli-pub");
    h.user_id = Some("alice".into());
    h.password = Some(actix_amps::protocol::Password::new("s3cret"));
    c.logon_with(h).await;
    c.send(&publish("orders", 41), b"{\"id\":1}").await;
    c.send(&publish("orders", 42), b"{\"id\":2}").await;
    c.send(&flush("f", AckTypes::PERSISTED), b"").await;
    c.recv_until(|f| is_cid(f, "f")).await;

    // The journal refuses while the server holds the directory.
    let out = Command::new(BIN)
        .args(["journal", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let logs = reader.join().unwrap().join("\n");
    assert!(!logs.contains("s3cret"), "password leaked into logs");

    let out = Command::new(BIN)
        .args(["journal", "--json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let c = &v["clients"]["cli-pub"];
    assert_eq!(c["count"], 2);
    assert_eq!(c["first"], 41);
    assert_eq!(c["last"], 42);
    assert_eq!(c["duplicates"], serde_json::json!([]));
    assert_eq!(c["missing"], serde_json::json!([]));

    let out = Command::new(BIN)
        .args(["journal", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cli-pub: count=2 first=41 last=42"), "{text}");
}

#[test]
fn bad_arguments_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--deny-write",
            "(",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("actix-amps: error: invalid topic regex")),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["journal", "--data", "/nonexistent/amps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
