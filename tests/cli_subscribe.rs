//! The `subscribe`, `sow`, `sow-and-subscribe` and `ping` commands: their output and exit
//! codes, a subscription surviving a server restart, and a bookmark subscription resumed after
//! the subscribing process is SIGKILLed (file bookmark store).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{TestServer, WAIT};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_actix-amps"))
}

/// A running command with its stdout lines and stderr lines arriving on channels.
struct Running {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn start(args: &[&str]) -> Running {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn actix-amps");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    Running { child, out, err }
}

impl Running {
    /// Waits for a stderr line containing `what`; panics (with stderr so far) otherwise.
    fn stderr_until(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.err.recv_timeout(left) {
                Ok(l) if l.contains(what) => return,
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        panic!("no stderr line with {what:?}; stderr: {seen:?}");
    }

    fn line(&self) -> Value {
        let l = self
            .out
            .recv_timeout(WAIT)
            .expect("a line within the deadline");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))
    }

    fn lines(&self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.line()).collect()
    }

    /// Waits for the exit; returns the status, every remaining stdout line and all stderr.
    fn finish(mut self) -> (ExitStatus, Vec<Value>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = self
            .out
            .iter()
            .map(|l| serde_json::from_str(&l).expect("JSON"))
            .collect();
        let err: Vec<String> = self.err.iter().collect();
        (status, out, err.join("\n"))
    }
}

fn publish(uri: &str, topic: &str, lines: &[String]) {
    let mut child = bin()
        .args(["publish", "--uri", uri, "--topic", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn publish");
    let mut stdin = child.stdin.take().expect("stdin");
    for l in lines {
        writeln!(stdin, "{l}").expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("publish exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ids(range: std::ops::Range<u64>) -> Vec<String> {
    range
        .map(|i| format!(r#"{{"id":{i},"qty":{i}}}"#))
        .collect()
}

fn id(line: &Value) -> u64 {
    let data: Value = serde_json::from_str(line["data"].as_str().expect("data")).expect("json");
    data["id"].as_u64().expect("id")
}

const KEYS: [&str; 8] = [
    "command",
    "topic",
    "data",
    "bookmark",
    "sow_key",
    "sub_id",
    "correlation_id",
    "reason",
];

#[test]
fn subscribe_prints_one_json_line_per_message_and_exits_after_count() {
    let server = TestServer::start(|c| c);
    let uri = server.uri();
    let sub = start(&[
        "subscribe",
        "--uri",
        &uri,
        "--topic",
        "orders",
        "--sub-id",
        "S",
        "--count",
        "3",
    ]);
    sub.stderr_until("subscribed S");
    publish(&uri, "orders", &ids(0..5));
    let (status, lines, err) = sub.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(lines.len(), 3, "exactly --count lines");
    for (i, l) in lines.iter().enumerate() {
        for k in KEYS {
            assert!(l.get(k).is_some(), "key {k} in {l}");
        }
        assert_eq!(l["command"], "p");
        assert_eq!(l["topic"], "orders");
        assert_eq!(l["sub_id"], "S");
        assert!(l["bookmark"].as_str().is_some_and(|b| b.ends_with('|')));
        assert!(l["reason"].is_null() && l["correlation_id"].is_null());
        assert_eq!(id(l), i as u64);
    }
}

#[test]
fn a_refused_subscription_exits_one_with_the_reason() {
    let server = TestServer::start(|c| c.deny_read("^secret"));
    let uri = server.uri();
    for (args, reason) in [
        (vec!["--topic", "orders", "--filter", "/id >"], "bad filter"),
        (vec!["--topic", "secret"], "not entitled"),
    ] {
        let mut all = vec!["subscribe", "--uri", uri.as_str()];
        all.extend(args);
        let (status, lines, err) = start(&all).finish();
        assert_eq!(status.code(), Some(1));
        assert!(lines.is_empty());
        let last = err.lines().last().unwrap_or("");
        assert!(last.contains(reason), "{err}");
        assert!(last.starts_with("actix-amps: error:"), "one line: {err}");
    }
}

#[test]
fn subscribe_exits_zero_at_its_timeout() {
    let server = TestServer::start(|c| c);
    let started = Instant::now();
    let (status, lines, err) = start(&[
        "subscribe",
        "--uri",
        &server.uri(),
        "--topic",
        "quiet",
        "--timeout",
        "0.5",
    ])
    .finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(lines.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[test]
fn sow_prints_records_and_exits_when_the_query_completes() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let uri = server.uri();
    publish(&uri, "orders", &ids(0..6));
    let (status, lines, err) = start(&[
        "sow",
        "--uri",
        &uri,
        "--topic",
        "orders",
        "--order-by",
        "/id DESC",
        "--top-n",
        "3",
        "--batch-size",
        "2",
    ])
    .finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(lines.iter().map(id).collect::<Vec<_>>(), vec![5, 4, 3]);
    for l in &lines {
        assert!(l["sow_key"].is_string() && l["data"].is_string(), "{l}");
    }
    let (status, _, err) = start(&[
        "sow",
        "--uri",
        &uri,
        "--topic",
        "orders",
        "--order-by",
        "/id SIDEWAYS",
    ])
    .finish();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("invalid order by"), "{err}");
    assert!(!err.contains("WARN"), "the refusal is reported once: {err}");
    server.handle.freeze();
    let (status, _, err) = start(&[
        "sow",
        "--uri",
        &uri,
        "--topic",
        "orders",
        "--timeout",
        "0.5",
    ])
    .finish();
    assert_eq!(status.code(), Some(1), "{err}");
    server.handle.thaw();
}

#[test]
fn sow_and_subscribe_prints_records_then_live_lines() {
    let server = TestServer::start(|c| c.sow("^orders$", &["/id"]));
    let uri = server.uri();
    publish(&uri, "orders", &ids(0..5));
    let sas = start(&[
        "sow-and-subscribe",
        "--uri",
        &uri,
        "--topic",
        "orders",
        "--filter",
        "/qty > 1",
        "--oof",
        "--count",
        "5",
    ]);
    let sow = sas.lines(3);
    assert!(sow.iter().all(|l| l["command"] == "sow"));
    let mut got: Vec<u64> = sow.iter().map(id).collect();
    got.sort_unstable();
    assert_eq!(got, vec![2, 3, 4]);
    sas.stderr_until("subscribed");
    publish(
        &uri,
        "orders",
        &[r#"{"id":3,"qty":0}"#.into(), r#"{"id":9,"qty":9}"#.into()],
    );
    let (status, rest, err) = sas.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(rest.len(), 2, "--count counts every line");
    assert_eq!(
        (rest[0]["command"].as_str(), rest[0]["reason"].as_str()),
        (Some("oof"), Some("match"))
    );
    assert_eq!((rest[1]["command"].as_str(), id(&rest[1])), (Some("p"), 9));
}

#[test]
fn ping_reports_the_server_version_and_fails_without_a_server() {
    let server = TestServer::start(|c| c);
    let (status, lines, err) = start(&["ping", "--uri", &server.uri()]).finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(lines[0]["server_version"].is_string());
    assert!(lines[0]["round_trip_us"].is_u64());
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let uri = format!("tcp://127.0.0.1:{closed}/amps/json");
    let (status, _, err) = start(&["ping", "--uri", &uri, "--timeout", "0.5"]).finish();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("not logged on"), "{err}");
}

/// The commands to watch a subscription survive a server restart: a plain `subscribe` with
/// `--bookmark epoch` keeps running, resubscribes from its bookmarks, and prints everything
/// once.
#[test]
fn a_cli_subscription_survives_a_server_restart() {
    let server = TestServer::start(|c| c);
    let uri = server.uri();
    let sub = start(&[
        "subscribe",
        "--uri",
        &uri,
        "--topic",
        "t",
        "--bookmark",
        "epoch",
        "--sub-id",
        "r",
        "--count",
        "20",
    ]);
    sub.stderr_until("subscribed r");
    publish(&uri, "t", &ids(0..10));
    let first = sub.lines(10);
    server.handle.restart().expect("restart");
    sub.stderr_until("subscribed again from the bookmark store");
    publish(&uri, "t", &ids(10..20));
    let (status, rest, err) = sub.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    let all: Vec<u64> = first.iter().chain(&rest).map(id).collect();
    assert_eq!(
        all,
        (0..20).collect::<Vec<_>>(),
        "nothing missed or repeated"
    );
}

/// SIGKILL a subscribing process that keeps its bookmarks in a file; the next run with
/// `--bookmark recent` continues where the printed lines stopped: nothing is skipped, and the
/// only lines that can come twice are the few printed after the last record reached the file.
/// A run that ends normally records everything: the next one repeats nothing.
#[test]
fn a_killed_subscriber_resumes_from_its_bookmark_file() {
    const N: u64 = 3000;
    let server = TestServer::start(|c| c);
    let uri = server.uri();
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("bookmarks");
    let store = store.to_str().expect("utf8 path");
    publish(&uri, "t", &ids(0..N));
    let args = [
        "subscribe",
        "--uri",
        &uri,
        "--topic",
        "t",
        "--sub-id",
        "k",
        "--bookmark",
        "recent",
        "--bookmark-store",
        store,
    ];
    let mut first = start(&args);
    let head: Vec<u64> = first.lines(1000).iter().map(id).collect();
    // Kill once something was recorded (the printed lines' bookmarks reach the file shortly
    // after they are printed).
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(store).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "nothing recorded");
        std::thread::sleep(Duration::from_millis(2));
    }
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    // Everything the killed process printed (read to the pipe's end).
    let printed: Vec<u64> = head
        .into_iter()
        .chain(
            first
                .out
                .iter()
                .map(|l| id(&serde_json::from_str(&l).expect("json"))),
        )
        .collect();
    assert_eq!(
        printed,
        (0..printed.len() as u64).collect::<Vec<_>>(),
        "in order"
    );
    let killed_at = printed.len() as u64;

    let mut second_args = args.to_vec();
    second_args.extend(["--timeout", "3"]);
    let (status, rest, err) = start(&second_args).finish();
    assert_eq!(status.code(), Some(0), "{err}");
    let rest: Vec<u64> = rest.iter().map(id).collect();
    let resumed_at = *rest.first().expect("the second run prints the rest");
    eprintln!("killed after printing {killed_at} lines; the next run resumed at {resumed_at}");
    assert!(
        resumed_at <= killed_at,
        "nothing skipped: {resumed_at} > {killed_at}"
    );
    assert!(resumed_at > 0, "the recorded part is not repeated");
    assert_eq!(
        rest,
        (resumed_at..N).collect::<Vec<_>>(),
        "then everything, in order"
    );

    let mut third_args = args.to_vec();
    third_args.extend(["--timeout", "0.5"]);
    let (status, again, err) = start(&third_args).finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        again.is_empty(),
        "a clean exit recorded everything: {again:?}"
    );
}
