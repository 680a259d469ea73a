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
    // The logon gate ends it within the (shorter) flush deadline, with the cause, before a
    // line is read.
    assert!(
        err.contains("not logged on within 0.3 s") && err.contains("Connection refused"),
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

/// A publisher whose stdin stays open: the test writes lines and closes it when it wants.
struct Streaming {
    child: std::process::Child,
}

impl Streaming {
    fn start(uri: &str, name: &str, extra: &[&str]) -> Streaming {
        let child = bin()
            .args([
                "publish",
                "--uri",
                uri,
                "--topic",
                "t",
                "--client-name",
                name,
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn actix-amps");
        Streaming { child }
    }

    fn write(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn finish(mut self) -> std::process::Output {
        drop(self.child.stdin.take());
        self.child.wait_with_output().expect("wait")
    }
}

/// Waits (bounded) until the server has logged the first `n` writes of `name`, a fresh memory
/// store's: its numbering starts at `now_ms * 1_000_000 + 1` (PROTOCOL.md section 6), so the
/// first sequence is the last one's millisecond base plus one.
fn until_logged(server: &TestServer, name: &str, n: u64) {
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        if let Some(last) = server.handle.last_sequence(name) {
            let first = last - last % 1_000_000 + 1;
            if last >= first + n - 1 {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: {n} writes never logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn each_line_is_sent_as_soon_as_it_is_read() {
    let server = TestServer::start(|c| c);
    let mut p = Streaming::start(&server.uri(), "cli-stream", &[]);
    p.write("first\n");
    // Logged by the server while stdin is still open: not held back for a batch.
    until_logged(&server, "cli-stream", 1);
    p.write("second\n");
    let out = p.finish();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.persisted("cli-stream").len(), 2);
}

#[cfg(unix)]
#[test]
fn an_interrupt_flushes_what_was_read_and_exits_130() {
    let server = TestServer::start(|c| c);
    let mut p = Streaming::start(&server.uri(), "cli-int", &[]);
    let lines: String = (0..500).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    p.write(&lines);
    until_logged(&server, "cli-int", 500);
    // Stdin stays open (`wait` would close it): the interrupt, not the end of input, ends
    // the run.
    let stdin = p.child.stdin.take();
    p.signal("-INT");
    let status = p.child.wait().expect("wait");
    drop(stdin);
    let mut err = String::new();
    std::io::Read::read_to_string(p.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("published=500 persisted=500 failed=0"),
        "{err}"
    );
    assert_eq!(server.persisted("cli-int").len(), 500);
}

/// The server is killed after refusing a write that a later success covers, before the
/// refusal's ack leaves: the CLI still prints it, counts it and exits 2.
#[test]
fn a_refusal_survives_a_server_kill_and_is_printed() {
    let server = TestServer::start(|c| c.max_message_size(1000));
    let mut p = Streaming::start(&server.uri(), "cli-kill", &["--flush-timeout", "20000"]);
    server.handle.stall_acks();
    p.write(&format!("small1\n{}\nsmall3\n", "x".repeat(2000)));
    until_logged(&server, "cli-kill", 3);
    server.handle.kill();
    server.handle.restart().unwrap();
    let out = p.finish();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("published=3 persisted=2 failed=1"), "{err}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"], "message too large");
    assert_eq!(lines[0]["data"].as_str().map(str::len), Some(2000));
    assert_eq!(server.persisted("cli-kill").len(), 2);
}

#[test]
fn a_second_run_with_the_same_name_prints_no_old_failure() {
    let server = TestServer::start(|c| c.deny_write("^denied"));
    let out = publish(&server.uri(), "denied.t", "cli-again", "x\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    for _ in 0..2 {
        let out = publish(&server.uri(), "fine", "cli-again", "y\n", &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn a_body_over_the_server_limit_is_one_failed_line_and_the_rest_persists() {
    let server = TestServer::start(|c| c.max_message_size(1000));
    let input = format!("a\n{}\nb\n", "x".repeat(200_000));
    let out = publish(
        &server.uri(),
        "t",
        "cli-huge",
        &input,
        &["--flush-timeout", "20000"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("published=3 persisted=2 failed=1"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("message too large"));
    assert_eq!(
        server.handle.stats().logons_accepted,
        1,
        "no reconnect loop"
    );
    assert_eq!(server.persisted("cli-huge").len(), 2);
}

/// The file store's disk fills up (a file-size limit, as `ulimit -f` sets, with SIGXFSZ
/// ignored): the batch answered with an error was never sent, so the server has exactly what
/// the CLI reported stored.
#[cfg(target_os = "linux")]
#[test]
fn a_full_store_disk_refuses_writes_that_were_never_sent() {
    let server = TestServer::start(|c| c);
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..400)
        .map(|i| format!("{i:05}-{}\n", "y".repeat(1000)))
        .collect();
    let script = format!(
        "trap '' XFSZ; ulimit -f 200; exec {} publish --uri {} --topic t --client-name cli-full \
         --store file:{} --report-stored --batch 16",
        env!("CARGO_BIN_EXE_actix-amps"),
        server.uri(),
        dir.path().join("store").display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command stops reading once the disk is full: a broken pipe here is expected.
    let _ = child.stdin.take().unwrap().write_all(lines.as_bytes());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("never sent"), "{err}");
    let stored: u64 = err
        .lines()
        .filter_map(|l| l.strip_prefix("stored "))
        .map(|l| {
            let mut it = l.split(' ').map(|n| n.parse::<u64>().unwrap());
            let (a, b) = (it.next().unwrap(), it.next().unwrap());
            b - a + 1
        })
        .sum();
    assert!(stored > 0 && stored < 400, "{stored}");
    assert_eq!(server.persisted("cli-full").len() as u64, stored);
}
