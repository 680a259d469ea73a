//! The `publish` and `sow-delete` commands: output and exit codes, against an in-process server.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::TestServer;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actix-amps"))
}

fn publish(
    uri: &str,
    topic: &str,
    name: &str,
    stdin: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut child = bin()
        .args([
            "publish",
            "--uri",
            uri,
            "--topic",
            topic,
            "--client-name",
            name,
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn actix-amps");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait")
}

#[test]
fn all_persisted_exits_zero_with_no_output() {
    let server = TestServer::start(|c| c);
    let out = publish(
        &server.uri(),
        "t",
        "cli-ok",
        "a\nb\nc\n",
        &["--flush-timeout", "20000"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("published=3 persisted=3 failed=0"));
    assert_eq!(server.persisted("cli-ok").len(), 3);
}

#[test]
fn failed_writes_are_json_lines_and_exit_two() {
    let server = TestServer::start(|c| c.deny_write("^denied"));
    let out = publish(&server.uri(), "denied.t", "cli-fail", "x1\nx2\n", &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, data) in lines.iter().zip(["x1", "x2"]) {
        assert_eq!(line["reason"], "not entitled");
        assert_eq!(line["operation"], "publish");
        assert_eq!(line["topic"], "denied.t");
        assert_eq!(line["data"], data);
        assert!(line["sequence"].as_u64().unwrap() > 0);
        assert!(line["correlation_id"].is_null());
    }
}

#[test]
fn no_server_and_bad_arguments_exit_one() {
    // Bind and drop a listener to get a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("tcp://127.0.0.1:{port}/amps/json");
    let out = publish(&uri, "t", "cli-down", "x\n", &["--flush-timeout", "300"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 message(s) still unacknowledged") || err.contains("gave up"),
        "{err}"
    );

    let out = publish("http://nope", "t", "cli-bad", "", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported URI scheme"));
    let out = publish(&uri, "t", "cli-bad", "", &["--store", "disk"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn file_store_option_and_store_none() {
    let server = TestServer::start(|c| c);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("store").display());
    let out = publish(
        &server.uri(),
        "t",
        "cli-file",
        "1\n2\n",
        &["--store", &store],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = publish(&server.uri(), "t", "cli-none", "1\n", &["--store", "none"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.persisted("cli-file").len(), 2);
}

#[test]
fn sow_delete_prints_stats() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let out = publish(
        &server.uri(),
        "orders",
        "cli-sow",
        "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    for (args, expected) in [
        (vec!["--filter", "/id >= 3"], (1, 1, 3)),
        (vec!["--keys", "1"], (1, 1, 2)),
        (vec!["--data", "{\"id\":2}"], (1, 1, 1)),
    ] {
        let out = bin()
            .args(["sow-delete", "--uri", &server.uri(), "--topic", "orders"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (
                v["matches"].as_u64(),
                v["records_deleted"].as_u64(),
                v["topic_matches"].as_u64()
            ),
            (Some(expected.0), Some(expected.1), Some(expected.2))
        );
    }
    let out = bin()
        .args([
            "sow-delete",
            "--uri",
            &server.uri(),
            "--topic",
            "orders",
            "--filter",
            "/id ==",
            "--timeout",
            "5000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad filter"));
}
