//! Load test: a flood of hostile connections against one `actix-amps serve` process while a
//! legitimate publisher and legitimate logons keep working, within bounded time and with the
//! server's peak RSS (from `/proc/<pid>/status`, `VmHWM`) below a stated bound.
//!
//! The flood lasts 4 s (`HOSTILE_FLOOD_SECS` changes it, `HOSTILE_FLOOD_SCALE=N` multiplies
//! the worker counts, `HOSTILE_SERVE_ARGS` replaces the server's limits), each worker
//! reconnecting 10 ms after the server closes it:
//!
//! - idle: connect and send nothing (held until the server closes them);
//! - stalled: send the first bytes of a logon frame and stop;
//! - slowloris: trickle a frame one byte every 100 ms;
//! - oversized: announce a 64 MiB frame before logon and stream zeros at it;
//! - garbage: random bytes;
//! - hogs: log on (no users configured, so anyone can) and stream a 15 MiB frame, together far
//!   over the server's 64 MiB buffer budget.
//!
//! Meanwhile a `ClientActor` publishes 1,000 messages through the flood and flushes (every
//! one must be persisted, none failed), and a probe logs on afresh every 100 ms (retrying if
//! displaced). The test prints the figures (`--nocapture` shows them): connections per kind,
//! the legitimate waits, the server's peak RSS.
//!
//! Loopback only; the server is a child process, killed when the test ends.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_amps::client::{
    Backoff, ClientConfig, ConnectionEvent, Publish, PublishBatch, PublishFlush, ReconnectPolicy,
    Shutdown,
};
use actix_amps::protocol::{decode_frame, encode_parts, AckTypes, Command, Header, Status};
use bytes::{Buf, BytesMut};
use support::Events;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's buffer budget in this test.
const BUDGET: usize = 64 << 20;
/// The frame each hog streams.
const HOG_FRAME: usize = 15 << 20;
/// The bound on the server's peak RSS: the 64 MiB budget (plus what sessions read in the turn
/// before they are told to close), the waiting logons' buffers (64 x 64 KiB) and the process
/// itself (runtime, log buffers, allocator slack). Measured: 86-95 MiB at scale 1 and 2. (Before
/// `serve` fixed glibc's mmap threshold, freed frame buffers stayed resident: 120-240 MiB.)
const RSS_BOUND_MIB: u64 = 128;
/// The bound on any legitimate wait (a logon, the publisher's first logon, the final flush).
const LEGIT_BOUND: Duration = Duration::from_secs(5);
/// Messages the legitimate publisher sends.
const MESSAGES: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Idle,
    Stalled,
    Slowloris,
    Oversized,
    Garbage,
    Hog,
}

const KINDS: [(Kind, usize); 6] = [
    (Kind::Idle, 300),
    (Kind::Stalled, 100),
    (Kind::Slowloris, 50),
    (Kind::Oversized, 20),
    (Kind::Garbage, 20),
    (Kind::Hog, 6),
];

/// Connections each kind opened, and the bytes it sent.
#[derive(Default)]
struct FloodCount {
    connections: [AtomicU64; 6],
    bytes: [AtomicU64; 6],
    connect_errors: AtomicU64,
}

fn index(kind: Kind) -> usize {
    KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(0)
}

fn frame(h: &Header, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    encode_parts(h, body, &mut b);
    b
}

fn logon(name: &str) -> BytesMut {
    frame(
        &Header {
            command: Some(Command::Logon),
            cid: Some("l".into()),
            client_name: Some(name.into()),
            ack_type: AckTypes::PROCESSED,
            ..Header::default()
        },
        b"",
    )
}

/// Reads until the server closes (or `until`); returns whether it closed.
async fn until_closed(s: &mut TcpStream, until: Instant) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one frame (bounded by `d`); `None` if closed or late.
async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut, d: Duration) -> Option<Header> {
    tokio::time::timeout(d, async {
        loop {
            if buf.len() >= 4 {
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() >= 4 + len {
                    buf.advance(4);
                    return decode_frame(buf.split_to(len).freeze())
                        .ok()
                        .map(|f| f.header);
                }
            }
            if s.read_buf(buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// One hostile worker: misbehaves, waits to be closed, reconnects, until `until`.
async fn worker(kind: Kind, id: usize, addr: SocketAddr, until: Instant, count: Arc<FloodCount>) {
    let i = index(kind);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (id as u64) << 17;
    let mut round = 0u64;
    while Instant::now() < until {
        let mut s =
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                _ => {
                    count.connect_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
        count.connections[i].fetch_add(1, Ordering::Relaxed);
        round += 1;
        let mut sent = 0usize;
        match kind {
            Kind::Idle => {}
            Kind::Stalled => {
                let l = logon(&format!("stalled-{id}"));
                if s.write_all(&l[..10]).await.is_ok() {
                    sent += 10;
                }
            }
            Kind::Slowloris => {
                let l = logon(&format!("slow-{id}"));
                for b in l.iter().take(l.len() - 1) {
                    if Instant::now() >= until || s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    sent += 1;
                    let mut probe = [0u8; 256];
                    match tokio::time::timeout(Duration::from_millis(100), s.read(&mut probe)).await
                    {
                        Err(_) => {}
                        Ok(Ok(n)) if n > 0 => {}
                        Ok(_) => break,
                    }
                }
            }
            Kind::Oversized => {
                let mut chunk = vec![0u8; 64 * 1024];
                chunk[..4].copy_from_slice(&(64u32 << 20).to_be_bytes());
                while Instant::now() < until {
                    match s.write_all(&chunk).await {
                        Ok(()) => sent += chunk.len(),
                        Err(_) => break,
                    }
                    chunk[..4].copy_from_slice(&[0; 4]);
                }
            }
            Kind::Garbage => {
                let mut junk = vec![0u8; 4096];
                for b in junk.iter_mut() {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    *b = rng as u8;
                }
                if s.write_all(&junk).await.is_ok() {
                    sent += junk.len();
                }
            }
            Kind::Hog => {
                let mut buf = BytesMut::new();
                let _ = s.write_all(&logon(&format!("hog-{id}-{round}"))).await;
                let ok = read_frame(&mut s, &mut buf, Duration::from_secs(2))
                    .await
                    .is_some_and(|h| h.status == Some(Status::Success));
                if ok {
                    let head = frame(
                        &Header {
                            command: Some(Command::Publish),
                            topic: Some("hog".into()),
                            ..Header::default()
                        },
                        b"",
                    );
                    // The announced length covers a 15 MiB body that never finishes.
                    let mut announce = head.clone();
                    let len = (head.len() - 4 + HOG_FRAME) as u32;
                    announce[..4].copy_from_slice(&len.to_be_bytes());
                    let _ = s.write_all(&announce).await;
                    let chunk = vec![b'h'; 256 * 1024];
                    while sent + chunk.len() < HOG_FRAME && Instant::now() < until {
                        match s.write_all(&chunk).await {
                            Ok(()) => sent += chunk.len(),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        count.bytes[i].fetch_add(sent as u64, Ordering::Relaxed);
        until_closed(&mut s, until).await;
        drop(s);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server's peak and current RSS in KiB (`VmHWM`, `VmRSS`).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path) -> Serve {
    let mut child = Process::new(env!("CARGO_BIN_EXE_actix-amps"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir)
        // `HOSTILE_SERVE_ARGS` replaces the limits, for comparisons by hand (the limits off,
        // say, to see what the flood does without them).
        .args(
            std::env::var("HOSTILE_SERVE_ARGS")
                .unwrap_or_else(|_| {
                    format!(
                        "--logon-timeout 1000 --frame-timeout 1000 --max-pending-logons 64 \
                         --max-buffered-bytes {BUDGET}"
                    )
                })
                .split_whitespace(),
        )
        .args(["--max-message-size", &(16usize << 20).to_string()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("actix-amps: listening on ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve prints its address")
        .parse()
        .expect("an address");
    Serve { child, lines, addr }
}

/// A fresh connection logs on; retried while the server displaces or refuses it. Returns the
/// time from the first connect to the logon ack, and the attempts it took.
async fn probe(addr: SocketAddr, name: &str) -> (Duration, u32) {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            started.elapsed() < LEGIT_BOUND,
            "{name} not logged on within {LEGIT_BOUND:?} ({attempts} attempts)"
        );
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        if s.write_all(&logon(name)).await.is_err() {
            continue;
        }
        let mut buf = BytesMut::new();
        let left = LEGIT_BOUND.saturating_sub(started.elapsed());
        if let Some(h) = read_frame(&mut s, &mut buf, left).await {
            if h.status == Some(Status::Success) {
                return (started.elapsed(), attempts);
            }
        }
    }
}

fn stats_of(v: &mut [Duration]) -> String {
    v.sort();
    if v.is_empty() {
        return "none".into();
    }
    format!(
        "min {:?} median {:?} max {:?} (n={})",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1],
        v.len()
    )
}

#[actix_rt::test]
async fn a_hostile_flood_neither_locks_out_nor_exhausts_the_server() {
    let secs: u64 = std::env::var("HOSTILE_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let scale: usize = std::env::var("HOSTILE_FLOOD_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let flood = Duration::from_secs(secs);
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let addr = server.addr;
    let pid = server.child.id();
    let (hwm_before, _) = rss_kib(pid);

    // The flood runs on its own runtime and threads, as a separate attacker would.
    let count = Arc::new(FloodCount::default());
    let until = Instant::now() + flood;
    let flood_thread = {
        let count = count.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("flood runtime");
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                let mut id = 0;
                for (kind, n) in KINDS {
                    for _ in 0..n * scale {
                        id += 1;
                        tasks.spawn(worker(kind, id, addr, until, count.clone()));
                    }
                }
                while tasks.join_next().await.is_some() {}
            });
        })
    };
    // Let the flood build up before the legitimate clients arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The legitimate publisher.
    let uri = format!("tcp://{addr}/amps/json");
    let client = ClientConfig::new("legit-publisher")
        .uri(&uri)
        .unwrap()
        .heartbeat(None)
        .reconnect(
            ReconnectPolicy::new()
                .backoff(Backoff::Fixed(Duration::from_millis(50)))
                .max_retry_time(None)
                .stop_on_auth_failure(true),
        )
        .start()
        .unwrap();
    let mut events = Events::new();
    events.subscribe_connection(&client).await;
    let publisher_started = Instant::now();
    let first_logon = actix_rt::spawn(async move {
        tokio::time::timeout(
            LEGIT_BOUND,
            events.until_connection(|e| matches!(e, ConnectionEvent::LoggedOn { .. })),
        )
        .await
        .map(|_| publisher_started.elapsed())
    });
    let probes = tokio::spawn(async move {
        let mut waits = Vec::new();
        let mut retries = 0;
        let mut i = 0;
        while Instant::now() < until {
            i += 1;
            let (wait, attempts) = probe(addr, &format!("probe-{i}")).await;
            waits.push(wait);
            retries += attempts - 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (waits, retries)
    });
    let mut sent = 0;
    while sent < MESSAGES {
        let batch = (0..50)
            .map(|k| Publish::new("legit", format!("{{\"id\":{}}}", sent + k)))
            .collect();
        client
            .send(PublishBatch::new(batch))
            .await
            .unwrap()
            .unwrap();
        sent += 50;
        tokio::time::sleep(flood / (MESSAGES as u32 / 50) / 2).await;
    }
    let first_logon = first_logon.await.expect("logon waiter");
    let flush_started = Instant::now();
    let flushed = client
        .send(PublishFlush {
            timeout: flood + LEGIT_BOUND,
        })
        .await
        .unwrap();
    let flush_wait = flush_started.elapsed();
    let (mut probe_waits, probe_retries) = probes.await.unwrap();
    let stats = support::stats(&client).await;
    client.send(Shutdown).await.unwrap();
    flood_thread.join().expect("flood thread");

    // The server survived and still serves a fresh logon.
    let (after, _) = probe(addr, "after-the-flood").await;
    let (hwm, rss) = rss_kib(pid);
    let alive = server.lines.lock().unwrap().len();
    let lines = server.lines.lock().unwrap().clone();
    let count_lines = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();

    let mut report = String::from("hostile flood:\n");
    for (kind, n) in KINDS {
        let i = index(kind);
        report += &format!(
            "  {kind:?}: {} workers, {} connections, {} MiB sent\n",
            n * scale,
            count.connections[i].load(Ordering::Relaxed),
            count.bytes[i].load(Ordering::Relaxed) >> 20
        );
    }
    report += &format!(
        "  connect errors: {}; flood {flood:?}\n  publisher: first logon after {first_logon:?}, {} published, {} persisted, {} failed, {} reconnects, final flush {flush_wait:?}\n  probe logons: {} ({probe_retries} retries); after the flood {after:?}\n  server: peak RSS {} MiB (at start {} MiB, now {} MiB); log: {} logon timeouts, {} budget disconnects, {} slow/read timeouts; {alive} log lines",
        count.connect_errors.load(Ordering::Relaxed),
        stats.published,
        stats.persisted,
        stats.failed,
        stats.reconnects,
        stats_of(&mut probe_waits),
        hwm >> 10,
        hwm_before >> 10,
        rss >> 10,
        count_lines("no logon in time"),
        count_lines("holds the most of the server's buffers"),
        count_lines("did not arrive in time"),
    );
    eprintln!("{report}");

    assert!(first_logon.is_ok(), "publisher never logged on\n{report}");
    assert!(flushed.is_ok(), "flush failed: {flushed:?}\n{report}");
    assert!(flush_wait < LEGIT_BOUND, "{report}");
    assert_eq!(stats.published, MESSAGES as u64, "{report}");
    assert_eq!(stats.persisted, MESSAGES as u64, "{report}");
    assert_eq!(stats.failed, 0, "{report}");
    assert!(!probe_waits.is_empty(), "{report}");
    assert!(
        hwm >> 10 < RSS_BOUND_MIB,
        "peak RSS {} MiB over {RSS_BOUND_MIB} MiB\n{report}",
        hwm >> 10
    );
    assert!(
        count_lines("holds the most of the server's buffers") > 0,
        "the hogs were closed by the budget, with a logged reason\n{report}"
    );
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{report}");
    for (kind, _) in KINDS {
        assert!(
            count.connections[index(kind)].load(Ordering::Relaxed) > 0,
            "{kind:?} ran\n{report}"
        );
    }
}
