//! The CLI as a script uses it: failing fast and clearly on configuration errors and
//! unreachable servers, `AMPS_URI`, records as bytes (`--file`, `--delimiter`), the per-record
//! options, `--rate`, progress on stderr, no colour codes when redirected, and `journal`
//! telling a restart from a gap. Every run is the real binary against the embedded server on
//! 127.0.0.1:0.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::TestServer;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_actix-amps"));
    c.env_remove("AMPS_URI").env_remove("RUST_LOG");
    c
}

/// Runs `cmd` with `stdin` and a bound: a hang fails the test instead of blocking it.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn actix-amps");
    let mut input = child.stdin.take().expect("stdin");
    // A command that fails at once (a refused logon) may exit before reading its input.
    if let Err(e) = input.write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(support::WAIT) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: a plain kill of the child we spawned.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("actix-amps did not exit within {:?}", support::WAIT);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loopback port nobody listens on.
fn closed_port_uri() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("tcp://127.0.0.1:{port}/amps/json")
}

/// The JSON lines of `subscribe --bookmark epoch --count n` on `topic`.
fn replay(uri: &str, topic: &str, n: usize) -> Vec<serde_json::Value> {
    let mut cmd = bin();
    cmd.args([
        "subscribe",
        "--uri",
        uri,
        "--topic",
        topic,
        "--bookmark",
        "epoch",
    ])
    .args(["--count", &n.to_string(), "--timeout", "15"]);
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), n, "{}", text(&out.stdout));
    lines
}

/// The bytes a delivery line carries: `data_base64` when present, else `data`.
fn body(line: &serde_json::Value) -> Vec<u8> {
    match line["data_base64"].as_str() {
        Some(b64) => decode_base64(b64),
        None => line["data"].as_str().expect("data").as_bytes().to_vec(),
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .take(4 - pad)
            .fold(0u32, |n, &c| (n << 6) | u32::from(val(c)))
            << (6 * pad);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

#[test]
fn a_wrong_password_fails_every_client_command_at_once() {
    let server = TestServer::start(|c| c.user("alice", "right"));
    let uri = server.uri().replace("tcp://", "tcp://alice:wrong@");
    let commands: [&[&str]; 5] = [
        &["sow-delete", "--topic", "t", "--keys", "1"],
        &["publish", "--topic", "t"],
        &["subscribe", "--topic", "t"],
        &["sow", "--topic", "t"],
        &["ping"],
    ];
    for args in commands {
        let mut cmd = bin();
        cmd.args(args).args(["--uri", &uri]);
        let started = Instant::now();
        let out = run(cmd, b"x\n");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with("actix-amps: error:") && last.contains("auth failure"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("wrong"), "the password leaked: {err}");
        // Refused at the first logon, not after a timeout (the default deadline is 10 s).
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn an_unreachable_server_fails_within_the_connect_timeout_with_the_cause() {
    let uri = closed_port_uri();
    let mut cmd = bin();
    cmd.args([
        "publish",
        "--uri",
        &uri,
        "--topic",
        "t",
        "--connect-timeout",
        "0.5",
    ]);
    let out = run(cmd, b"x\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("not logged on within 0.5 s") && last.contains("refused"),
        "{err}"
    );
    // Nothing was read, so nothing was stored: the summary line is never printed.
    assert!(!err.contains("published="), "{err}");
}

#[test]
fn configuration_errors_fail_before_connecting() {
    let uri = closed_port_uri();
    let cases: [(&[&str], &str); 5] = [
        (
            &["publish", "--topic", "t", "--client-name", ""],
            "--client-name must not be empty",
        ),
        (
            &["publish", "--topic", "t", "--delimiter", "ab"],
            "--delimiter",
        ),
        (&["publish", "--topic", "t", "--rate", "0"], "--rate"),
        (
            &["publish", "--topic", "t", "--correlation-id", "a b"],
            "--correlation-id",
        ),
        (
            &["ping", "--uri", "tcps://127.0.0.1:1/amps/json"],
            "--tls-ca",
        ),
    ];
    for (args, expected) in cases {
        let mut cmd = bin();
        cmd.args(args);
        if !args.contains(&"--uri") {
            cmd.args(["--uri", &uri]);
        }
        let started = Instant::now();
        let out = run(cmd, b"");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        // No connection attempt: nothing listens there, and a retry would take 200 ms.
        assert!(
            !err.contains("connection attempt failed"),
            "{args:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
    }
    let out = run(
        {
            let mut c = bin();
            c.args(["publish", "--topic", "t"]);
            c
        },
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--uri"), "{}", text(&out.stderr));
}

#[test]
fn amps_uri_is_the_default_uri_and_its_password_is_never_shown() {
    let server = TestServer::start(|c| c.user("alice", "s3cret"));
    let uri = server.uri().replace("tcp://", "tcp://alice:s3cret@");
    let mut cmd = bin();
    cmd.env("AMPS_URI", &uri)
        .args(["publish", "--topic", "env", "--client-name", "env-1"]);
    let out = run(cmd, b"a\nb\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("published=2 persisted=2 failed=0"));
    let mut help = bin();
    help.env("AMPS_URI", &uri).args(["publish", "--help"]);
    let help = run(help, b"");
    assert!(
        text(&help.stdout).contains("AMPS_URI"),
        "{}",
        text(&help.stdout)
    );
    assert!(
        !text(&help.stdout).contains("s3cret"),
        "{}",
        text(&help.stdout)
    );
    assert_eq!(server.persisted("env-1").len(), 2);
}

#[test]
fn records_from_a_file_are_published_as_bytes_and_printed_back_exactly() {
    let server = TestServer::start(|c| c);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("records");
    let records: [&[u8]; 4] = [
        b"{\"id\":1}",
        b"\xff\xfe binary \x00 tail",
        b"",
        b"line\nwith newline",
    ];
    std::fs::write(&file, records.join(&b'|')).expect("write");
    let mut cmd = bin();
    cmd.args(["publish", "--uri", &server.uri(), "--topic", "bytes"])
        .args([
            "--file",
            file.to_str().expect("utf-8 path"),
            "--delimiter",
            "|",
        ]);
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("published=4 persisted=4"),
        "{}",
        text(&out.stderr)
    );
    let lines = replay(&server.uri(), "bytes", 4);
    let got: Vec<Vec<u8>> = lines.iter().map(body).collect();
    assert_eq!(got, records.map(<[u8]>::to_vec));
    assert!(
        lines[0].get("data_base64").is_none(),
        "text needs no base64"
    );

    // An unreadable file: a clear error before connecting.
    let mut cmd = bin();
    cmd.args([
        "publish",
        "--uri",
        &server.uri(),
        "--topic",
        "bytes",
        "--file",
    ])
    .arg(dir.path().join("absent"));
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn correlation_id_sow_key_expiration_and_delta_reach_the_server() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let publish = |input: &[u8], extra: &[&str]| {
        let mut cmd = bin();
        cmd.args(["publish", "--uri", &server.uri(), "--topic", "orders"])
            .args(extra);
        let out = run(cmd, input);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    publish(b"{\"id\":1,\"a\":1}\n", &["--expiration", "3600"]);
    publish(b"{\"id\":1,\"b\":2}\n", &["--delta"]);
    publish(b"{\"id\":2}\n", &["--correlation-id", "Y29ycg=="]);
    publish(b"{\"id\":9}\n", &["--sow-key", "custom-key"]);
    // The SOW records, with every field (the log itself keeps no correlation ids).
    let mut cmd = bin();
    cmd.args([
        "sow-and-subscribe",
        "--uri",
        &server.uri(),
        "--topic",
        "orders",
    ])
    .args(["--order-by", "/id", "--count", "3", "--timeout", "15"]);
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    let data = |r: &serde_json::Value| -> serde_json::Value {
        serde_json::from_str(r["data"].as_str().expect("data")).expect("JSON body")
    };
    // The delta merged into the first record.
    assert_eq!(
        data(&records[0]),
        serde_json::json!({"id": 1, "a": 1, "b": 2})
    );
    assert_eq!(records[1]["correlation_id"], "Y29ycg==", "{records:?}");
    // The keyed record is stored under the key given, not one derived from its body.
    assert_eq!(records[2]["sow_key"], "custom-key", "{records:?}");
}

#[test]
fn rate_paces_the_records_and_progress_goes_to_stderr_without_colour() {
    let server = TestServer::start(|c| c);
    let mut cmd = bin();
    cmd.args(["publish", "--uri", &server.uri(), "--topic", "paced"])
        .args(["--rate", "20", "--progress-interval", "0.2"]);
    let started = Instant::now();
    let out = run(cmd, "x\n".repeat(16).as_bytes());
    let elapsed = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // 16 records at 20 a second: the last goes no earlier than 15/20 s after the first.
    assert!(elapsed >= Duration::from_millis(750), "{elapsed:?}");
    assert!(err.contains("published=16 persisted=16"), "{err}");
    // Not a terminal: log lines (no bar), with counts and rate, and no escape codes.
    let progress: Vec<&str> = err.lines().filter(|l| l.contains("progress")).collect();
    assert!(!progress.is_empty(), "{err}");
    assert!(
        progress[0].contains("published") && progress[0].contains("/s"),
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "colour codes in redirected output: {err:?}"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn journal_shows_a_restart_as_a_new_incarnation_and_a_real_gap_as_missing() {
    let server = TestServer::start(|c| c);
    for _ in 0..2 {
        let mut cmd = bin();
        cmd.args(["publish", "--uri", &server.uri(), "--topic", "t"])
            .args(["--client-name", "restarted"]);
        let out = run(cmd, b"a\nb\nc\n");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    server.handle.stop();
    let mut cmd = bin();
    cmd.args(["journal", "--json", "--data"])
        .arg(server.dir.path());
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let c = &j["clients"]["restarted"];
    assert_eq!(c["count"], 6);
    assert_eq!(c["missing"], serde_json::json!([]), "{c}");
    let incarnations = c["incarnations"].as_array().expect("incarnations");
    assert_eq!(incarnations.len(), 2, "{c}");
    assert!(incarnations.iter().all(|i| i["count"] == 3), "{c}");
    let mut cmd = bin();
    cmd.args(["journal", "--data"]).arg(server.dir.path());
    let out = run(cmd, b"");
    let summary = text(&out.stdout);
    assert!(summary.contains("restarted: count=6") && summary.contains("incarnations=2"));
    assert!(!summary.contains("missing"), "{summary}");
}

#[test]
fn error_on_publish_gap_stops_at_a_server_that_lost_acknowledged_writes() {
    let dir = tempfile::tempdir().expect("dir");
    let store = format!("file:{}", dir.path().join("store").display());
    let first = TestServer::start(|c| c);
    let mut cmd = bin();
    cmd.args([
        "publish",
        "--uri",
        &first.uri(),
        "--topic",
        "t",
        "--client-name",
        "gap",
    ])
    .args(["--store", &store]);
    let out = run(cmd, b"a\nb\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A server that never saw them (a replica that was behind, a lost data directory).
    let second = TestServer::start(|c| c);
    let mut cmd = bin();
    cmd.args([
        "publish",
        "--uri",
        &second.uri(),
        "--topic",
        "t",
        "--client-name",
        "gap",
    ])
    .args(["--store", &store, "--error-on-publish-gap"]);
    let out = run(cmd, b"c\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().last().unwrap_or("").contains("publish gap"),
        "{err}"
    );
    // Without the flag the same publish goes on, as AMPS clients do.
    let mut cmd = bin();
    cmd.args([
        "publish",
        "--uri",
        &second.uri(),
        "--topic",
        "t",
        "--client-name",
        "gap",
    ])
    .args(["--store", &store]);
    let out = run(cmd, b"c\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
