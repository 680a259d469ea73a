//! The client process is killed with SIGKILL mid-stream while publishing through a file store;
//! started again with the same client name and store, it replays what was not acknowledged.
//! Every message the killed process reported as stored is persisted exactly once, and the
//! second run reports no failed write (no false duplicate).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::TestServer;

const NAME: &str = "crash-publisher";

fn publisher(uri: &str, store: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_actix-amps"));
    c.args([
        "publish",
        "--uri",
        uri,
        "--topic",
        "crash",
        "--client-name",
        NAME,
    ])
    .args([
        "--store",
        store,
        "--report-stored",
        "--batch",
        "200",
        "--flush-timeout",
        "20000",
    ]);
    c
}

#[test]
fn sigkill_mid_stream_then_restart_persists_every_stored_message_once() {
    let server = TestServer::start(|c| c);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("store").display());

    let mut child = publisher(&server.uri(), &store)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn publisher");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Far more than the child will get through before it is killed; stops at broken pipe.
        for i in 0..2_000_000u64 {
            if writeln!(stdin, r#"{{"i":{i}}}"#).is_err() {
                return;
            }
        }
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut reported: Vec<(u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    // Batches hold only what was already buffered, so count messages, not batches.
    while reported.iter().map(|(a, b)| b - a + 1).sum::<u64>() < 10_000 {
        assert!(
            Instant::now() < deadline,
            "child reported too little in time"
        );
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("child exited early");
        }
        if let Some(rest) = line.trim().strip_prefix("stored ") {
            let mut it = rest.split(' ').map(|n| n.parse::<u64>().unwrap());
            reported.push((it.next().unwrap(), it.next().unwrap()));
        }
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().unwrap();
    // Anything it reported before dying counts too.
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    for l in rest.lines() {
        if let Some(r) = l.trim().strip_prefix("stored ") {
            let v: Vec<u64> = r.split(' ').filter_map(|n| n.parse().ok()).collect();
            if v.len() == 2 {
                reported.push((v[0], v[1]));
            }
        }
    }
    feeder.join().unwrap();

    // Same client name, same store, no new input: replay and flush.
    let out = publisher(&server.uri(), &store)
        .stdin(Stdio::null())
        .output()
        .expect("second run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "second run must persist the rest with no failed write: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let persisted = server.persisted(NAME);
    let mut sorted = persisted.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), persisted.len(), "no sequence persisted twice");
    let mut missing = 0;
    let mut count = 0;
    for (first, last) in &reported {
        for seq in *first..=*last {
            count += 1;
            if sorted.binary_search(&seq).is_err() {
                missing += 1;
            }
        }
    }
    assert_eq!(
        missing, 0,
        "{missing} of {count} reported-stored messages were lost"
    );
    assert!(
        count >= 10_000,
        "the test exercised enough messages: {count}"
    );
}
