//! The subscription benchmark: deliveries per second into a subscriber actor as a ratio to a
//! raw socket reader of the same stream, delivery latency, and what heavy subscription traffic
//! does to the publish path.
//!
//! ```text
//! cargo run --release --example subscribe_bench                  # everything, 3 runs
//! cargo run --release --example subscribe_bench -- --quick --runs 1
//! cargo run --release --example subscribe_bench -- --only blast   # one section
//! ```
//!
//! Sections (each figure min/median/max over `--runs`; ratios per run, the raw reader and the
//! client alternating which goes first):
//!
//! - **blast**: a feeder thread answers the logon and the subscribe, then writes a pre-encoded
//!   stream of N deliveries (`{"c":"p","t":"bench","sids":S,"bm":..,"s":..}` + 128 B) as fast
//!   as the socket takes it, so the client, not a server, is measured. The raw reader is one
//!   thread reading 256 KiB at a time and counting frames by their length prefix (and their
//!   body bytes); the client runs a `Subscribe` whose subscriber actor counts messages (and
//!   their data bytes), on the client's thread ("same thread") or on an arbiter of its own.
//!   Rates are N over the time from the first message seen to the N-th.
//! - **server**: the same two readers subscribed to the embedded server (fsync `never`) while
//!   a raw pipelined publisher writes N messages: the server's fan-out sets the pace.
//! - **latency**: one message every ~200 us, each carrying its send time; the subscriber
//!   actor's handler records the delay. Through the embedded server (a client publishes, a
//!   second client's subscriber receives: the whole path), and from the feeder (the client's
//!   receive path alone). p50/p99 of all samples of a run.
//! - **publish**: `Publish` + `PublishFlush` round trips on a client, idle, and while the same
//!   client's subscription receives a heavy stream (a raw publisher flooding the embedded
//!   server): p50/p99 and the ratio loaded/idle.
//!
//! The machine is shared: every throughput figure is paired with its baseline from the same
//! run. The table goes to stdout, progress to stderr.

#[path = "bench/stats.rs"]
mod stats;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_amps::client::{
    ClientActor, ClientConfig, Deliveries, Publish, PublishFlush, Subscribe, SubscriptionEvent,
    WaitLoggedOn,
};
use actix_amps::protocol::{decode_frame, Command};
use actix_amps::server::{FsyncPolicy, RawWriter, Server, ServerConfig, ServerHandle};
use bytes::{BufMut, Bytes, BytesMut};
use stats::{percentile, summary};
use tokio::sync::oneshot;

const BODY: usize = 128;
const SUB_ID: &str = "bench";

struct Args {
    quick: bool,
    runs: usize,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        runs: 3,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--runs" => {
                args.runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--runs needs a positive number")?
            }
            "--only" => args.only = Some(it.next().ok_or("--only needs a section")?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Nanoseconds since the benchmark started (a clock every thread shares).
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn body_with_stamp(ns: u64) -> Vec<u8> {
    let mut b = format!("{{\"ns\":{ns:020},\"pad\":\"").into_bytes();
    b.resize(BODY - 2, b'x');
    b.extend_from_slice(b"\"}");
    b
}

fn stamp_of(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data.get(6..26)?).ok()?.parse().ok()
}

// ---- the feeder: a scripted server that blasts pre-encoded deliveries -------------------

fn read_frame(s: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

fn write_json(s: &mut TcpStream, json: &str) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(json.len() + 4);
    b.extend_from_slice(&(json.len() as u32).to_be_bytes());
    b.extend_from_slice(json.as_bytes());
    s.write_all(&b)
}

/// Logon ack, then waits for the subscribe and acks it; returns its sub id.
fn feeder_handshake(s: &mut TcpStream) -> std::io::Result<String> {
    let logon = decode_frame(read_frame(s)?).map_err(std::io::Error::other)?;
    let cid = logon.header.cid.unwrap_or_default();
    write_json(
        s,
        &format!(
            r#"{{"c":"ack","cid":"{cid}","a":"processed","status":"success","version":"feeder"}}"#
        ),
    )?;
    loop {
        let f = decode_frame(read_frame(s)?).map_err(std::io::Error::other)?;
        if f.header.command == Some(Command::Subscribe) {
            let cid = f.header.cid.unwrap_or_default();
            write_json(
                s,
                &format!(r#"{{"c":"ack","cid":"{cid}","a":"processed","status":"success"}}"#),
            )?;
            return Ok(f.header.sub_id.unwrap_or(cid));
        }
    }
}

fn delivery(dst: &mut BytesMut, sid: &str, i: u64, body: &[u8]) {
    let header = format!(r#"{{"c":"p","t":"bench","sids":"{sid}","bm":"1234567|{i}|","s":{i}}}"#);
    dst.put_u32((header.len() + body.len()) as u32);
    dst.put_slice(header.as_bytes());
    dst.put_slice(body);
}

/// What the feeder sends after the handshake.
#[derive(Clone, Copy)]
enum Feed {
    /// `n` deliveries as fast as possible (a pre-encoded block, repeated).
    Blast(u64),
    /// `n` deliveries, one every `gap`, each stamped with its send time.
    Paced(u64, Duration),
}

/// Serves one connection with `feed`, then holds it open until the peer closes.
fn feeder(feed: Feed) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.set_nodelay(true);
        let Ok(sid) = feeder_handshake(&mut s) else {
            return;
        };
        match feed {
            Feed::Blast(n) => {
                const BLOCK: u64 = 16_384;
                let body = vec![b'x'; BODY];
                let mut block = BytesMut::new();
                for i in 0..BLOCK {
                    delivery(&mut block, &sid, i, &body);
                }
                let mut left = n;
                while left > 0 {
                    let k = left.min(BLOCK);
                    let bytes = if k == BLOCK {
                        &block[..]
                    } else {
                        let mut part = BytesMut::new();
                        for i in 0..k {
                            delivery(&mut part, &sid, i, &body);
                        }
                        block = part;
                        &block[..]
                    };
                    if s.write_all(bytes).is_err() {
                        return;
                    }
                    left -= k;
                }
            }
            Feed::Paced(n, gap) => {
                let mut buf = BytesMut::new();
                for i in 0..n {
                    buf.clear();
                    delivery(&mut buf, &sid, i, &body_with_stamp(now_ns()));
                    if s.write_all(&buf).is_err() {
                        return;
                    }
                    std::thread::sleep(gap);
                }
            }
        }
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    addr
}

// ---- the raw reader ---------------------------------------------------------------------

/// How much the raw reader does with each frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawWork {
    /// Split by length and count: the floor, bytes off the socket.
    Split,
    /// Decode each frame with the crate's codec (header parsed into a `Header`), as a reader
    /// without actors would.
    Decode,
}

/// Logs on, subscribes, reads until `n` deliveries; returns deliveries per second from the
/// first to the n-th.
fn raw_reader(addr: SocketAddr, topic: &str, n: u64, work: RawWork) -> f64 {
    if work == RawWork::Decode {
        return decoding_reader(addr, topic, n);
    }
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.set_nodelay(true);
    raw_handshake(&mut s, topic);
    let mut buf = vec![0u8; 256 * 1024];
    let (mut have, mut seen, mut bytes) = (0usize, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    loop {
        let r = s.read(&mut buf[have..]).expect("read");
        assert!(r > 0, "closed early");
        have += r;
        let mut pos = 0;
        while have - pos >= 4 {
            let len =
                u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            if have - pos < 4 + len {
                break;
            }
            // A delivery is anything but the two acks (`{"c":"ack"...`).
            if buf[pos + 4..pos + 4 + len].starts_with(br#"{"c":"p""#) {
                first.get_or_insert_with(Instant::now);
                seen += 1;
                bytes += len as u64;
            }
            pos += 4 + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if seen >= n {
            std::hint::black_box(bytes);
            let t = first.map_or(1e-9, |f| f.elapsed().as_secs_f64());
            return n as f64 / t.max(1e-9);
        }
        if buf.len() - have < 64 * 1024 {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

fn raw_handshake(s: &mut TcpStream, topic: &str) {
    let name = format!("raw-reader-{}", now_ns());
    write_json(
        s,
        &format!(r#"{{"c":"logon","cid":"l","client_name":"{name}","mt":"json","a":"processed","version":"raw"}}"#),
    )
    .expect("logon");
    write_json(
        s,
        &format!(
            r#"{{"c":"subscribe","t":"{topic}","cid":"s","a":"processed","sub_id":"{SUB_ID}"}}"#
        ),
    )
    .expect("subscribe");
}

/// A raw reader of a paced, stamped stream: the delay from the feeder's stamp to the frame's
/// arrival in this thread, for `n` deliveries (nanoseconds, unsorted).
fn raw_latency_reader(addr: SocketAddr, n: u64) -> Vec<u64> {
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.set_nodelay(true);
    raw_handshake(&mut s, "bench");
    let mut out = Vec::with_capacity(n as usize);
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0usize;
    while (out.len() as u64) < n {
        let r = s.read(&mut buf[have..]).expect("read");
        assert!(r > 0, "closed early");
        have += r;
        let mut pos = 0;
        while have - pos >= 4 {
            let len =
                u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            if have - pos < 4 + len {
                break;
            }
            let frame = &buf[pos + 4..pos + 4 + len];
            if frame.starts_with(br#"{"c":"p""#) {
                // The body is the last 128 bytes.
                if let Some(sent) = stamp_of(&frame[len.saturating_sub(BODY)..]) {
                    out.push(now_ns().saturating_sub(sent));
                }
            }
            pos += 4 + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
    }
    out
}

/// The decoding raw reader: the crate's `AmpsCodec` over a 256 KiB buffer.
fn decoding_reader(addr: SocketAddr, topic: &str, n: u64) -> f64 {
    use tokio_util::codec::Decoder;
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.set_nodelay(true);
    raw_handshake(&mut s, topic);
    let mut codec = actix_amps::protocol::AmpsCodec::default();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let (mut seen, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    loop {
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        let spare = buf.spare_capacity_mut();
        // Safety-free read: zero the spare part once, then read into it.
        let len = spare.len();
        let start = buf.len();
        buf.resize(start + len, 0);
        let r = s.read(&mut buf[start..]).expect("read");
        buf.truncate(start + r);
        assert!(r > 0, "closed early");
        while let Some(frame) = codec.decode(&mut buf).expect("decodes") {
            if frame.header.command == Some(Command::Publish) {
                first.get_or_insert_with(Instant::now);
                seen += 1;
                bytes += frame.body.len() as u64;
            }
        }
        if seen >= n {
            std::hint::black_box(bytes);
            let t = first.map_or(1e-9, |f| f.elapsed().as_secs_f64());
            return n as f64 / t.max(1e-9);
        }
    }
}

// ---- the subscriber actor ---------------------------------------------------------------

/// Counts messages; reports when it has `target`, with the first message's time.
struct Counter {
    target: u64,
    seen: u64,
    bytes: u64,
    first: Option<Instant>,
    done: Option<oneshot::Sender<(Instant, Instant)>>,
    /// Record latencies from stamped bodies.
    latencies: Option<Vec<u64>>,
    latency_tx: Option<oneshot::Sender<Vec<u64>>>,
}

impl Counter {
    fn counting(target: u64, done: oneshot::Sender<(Instant, Instant)>) -> Counter {
        Counter {
            target,
            seen: 0,
            bytes: 0,
            first: None,
            done: Some(done),
            latencies: None,
            latency_tx: None,
        }
    }

    fn timing(target: u64, done: oneshot::Sender<Vec<u64>>) -> Counter {
        Counter {
            target,
            seen: 0,
            bytes: 0,
            first: None,
            done: None,
            latencies: Some(Vec::with_capacity(target as usize)),
            latency_tx: Some(done),
        }
    }
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Counter {
    type Result = ();

    fn handle(&mut self, batch: Deliveries, _: &mut Context<Self>) {
        for ev in &batch.events {
            if let SubscriptionEvent::Message(d) = ev {
                if self.first.is_none() {
                    self.first = Some(Instant::now());
                }
                self.seen += 1;
                self.bytes += d.data_slice().len() as u64;
                if let Some(l) = &mut self.latencies {
                    if let Some(sent) = stamp_of(d.data_slice()) {
                        l.push(now_ns().saturating_sub(sent));
                    }
                }
            }
        }
        if self.seen >= self.target {
            std::hint::black_box(self.bytes);
            if let (Some(tx), Some(first)) = (self.done.take(), self.first) {
                let _ = tx.send((first, Instant::now()));
            }
            if let (Some(tx), Some(l)) = (self.latency_tx.take(), self.latencies.take()) {
                let _ = tx.send(l);
            }
        }
    }
}

fn client_for(uri: &str, name: &str) -> ClientConfig {
    ClientConfig::new(name)
        .uri(uri)
        .expect("uri")
        .heartbeat(None)
        .ack_conflation(Duration::from_millis(1))
}

/// Where the subscriber actor runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    SameThread,
    OwnArbiter,
}

/// Subscribes a counting actor through a client; returns its rate over `n` messages once
/// `start` (the feed) has been triggered.
async fn client_rate(
    uri: &str,
    topic: &str,
    n: u64,
    placement: Placement,
    start_feed: impl FnOnce(),
) -> f64 {
    let client = client_for(uri, &format!("bench-client-{}", now_ns()))
        .start()
        .expect("client");
    let (tx, rx) = oneshot::channel();
    let counter = match placement {
        Placement::SameThread => Counter::counting(n, tx).start(),
        Placement::OwnArbiter => {
            let arbiter = Arbiter::new();
            Counter::start_in_arbiter(&arbiter.handle(), move |_| Counter::counting(n, tx))
        }
    };
    client
        .send(Subscribe::new(topic, counter.recipient()).sub_id(SUB_ID))
        .await
        .expect("alive")
        .expect("subscribed");
    start_feed();
    let (first, last) = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("all deliveries in time")
        .expect("counter alive");
    client.do_send(actix_amps::client::Shutdown);
    n as f64 / (last - first).as_secs_f64().max(1e-9)
}

fn embedded_server() -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(
        ServerConfig::new(dir.path())
            .fsync(FsyncPolicy::Never)
            .ack_conflation(Duration::from_millis(1))
            .max_unsent_bytes(256 << 20),
    )
    .expect("server");
    (server, dir)
}

/// Publishes `n` 128-byte messages with the raw pipelined writer, on its own thread.
fn raw_publish(addr: SocketAddr, topic: &'static str, n: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let name = format!("raw-pub-{}", now_ns());
        rt.block_on(RawWriter::run(
            addr,
            &name,
            topic,
            Bytes::from(vec![b'x'; BODY]),
            n,
        ))
        .expect("raw publish");
    })
}

// ---- sections -----------------------------------------------------------------------------

type Rows = Vec<(String, Vec<f64>, &'static str)>;

async fn blast(args: &Args, rows: &mut Rows) {
    let n = if args.quick { 200_000 } else { 2_000_000 };
    let mut series: [Vec<f64>; 4] = Default::default();
    let (mut split_same, mut dec_same, mut split_own, mut dec_own) =
        (vec![], vec![], vec![], vec![]);
    let raw = |work: RawWork| async move {
        tokio::task::spawn_blocking(move || raw_reader(feeder(Feed::Blast(n)), "bench", n, work))
            .await
            .expect("raw")
    };
    let client = |placement: Placement| async move {
        let uri = format!("tcp://{}/amps/json", feeder(Feed::Blast(n)));
        client_rate(&uri, "bench", n, placement, || {}).await
    };
    for run in 0..args.runs {
        eprintln!("blast run {}/{}", run + 1, args.runs);
        let (r1, r2, c1, c2) = if run % 2 == 0 {
            let r1 = raw(RawWork::Split).await;
            let r2 = raw(RawWork::Decode).await;
            (
                r1,
                r2,
                client(Placement::SameThread).await,
                client(Placement::OwnArbiter).await,
            )
        } else {
            let c1 = client(Placement::SameThread).await;
            let c2 = client(Placement::OwnArbiter).await;
            let r2 = raw(RawWork::Decode).await;
            (raw(RawWork::Split).await, r2, c1, c2)
        };
        for (v, x) in series.iter_mut().zip([r1, r2, c1, c2]) {
            v.push(x);
        }
        split_same.push(c1 / r1);
        dec_same.push(c1 / r2);
        split_own.push(c2 / r1);
        dec_own.push(c2 / r2);
    }
    let m = n / 1000;
    let [r1, r2, c1, c2] = series;
    rows.push((
        format!("blast: raw reader, length split only, {m}k x 128 B"),
        r1,
        "msg/s",
    ));
    rows.push((
        "blast: raw reader, decoding each frame (AmpsCodec)".into(),
        r2,
        "msg/s",
    ));
    rows.push((
        "blast: client, subscriber on the client's thread".into(),
        c1,
        "msg/s",
    ));
    rows.push((
        "blast: client, subscriber on its own arbiter".into(),
        c2,
        "msg/s",
    ));
    rows.push((
        "blast: ratio client (same thread) / decoding reader".into(),
        dec_same,
        "x",
    ));
    rows.push((
        "blast: ratio client (own arbiter) / decoding reader".into(),
        dec_own,
        "x",
    ));
    rows.push((
        "blast: ratio client (same thread) / length-split reader".into(),
        split_same,
        "x",
    ));
    rows.push((
        "blast: ratio client (own arbiter) / length-split reader".into(),
        split_own,
        "x",
    ));
}

async fn from_server(args: &Args, rows: &mut Rows) {
    let n = if args.quick { 100_000 } else { 500_000 };
    let (mut raw, mut cl, mut ratio) = (vec![], vec![], vec![]);
    for run in 0..args.runs {
        eprintln!("server run {}/{}", run + 1, args.runs);
        let (server, _dir) = embedded_server();
        let addr = server.addr();
        let uri = server.uri();
        let raw_once = |topic: &'static str| async move {
            // The reader subscribes first; the publisher starts once it is placed.
            let reader =
                tokio::task::spawn_blocking(move || raw_reader(addr, topic, n, RawWork::Split));
            tokio::time::sleep(Duration::from_millis(200)).await;
            let p = raw_publish(addr, topic, n);
            let r = reader.await.expect("raw");
            let _ = p.join();
            r
        };
        let client_once = |topic: &'static str| {
            let uri = uri.clone();
            async move {
                let mut publisher = None;
                let rate = client_rate(&uri, topic, n, Placement::SameThread, || {
                    publisher = Some(raw_publish(addr, topic, n));
                })
                .await;
                if let Some(p) = publisher {
                    let _ = p.join();
                }
                rate
            }
        };
        let (r, c) = if run % 2 == 0 {
            let r = raw_once("srv-a").await;
            (r, client_once("srv-b").await)
        } else {
            let c = client_once("srv-a").await;
            (raw_once("srv-b").await, c)
        };
        raw.push(r);
        cl.push(c);
        ratio.push(c / r);
    }
    let m = n / 1000;
    rows.push((
        format!("server: raw reader (length split), {m}k x 128 B"),
        raw,
        "msg/s",
    ));
    rows.push((
        "server: client, subscriber on the client's thread".into(),
        cl,
        "msg/s",
    ));
    rows.push(("server: ratio client / raw".into(), ratio, "x"));
}

async fn latency(args: &Args, rows: &mut Rows) {
    let n: u64 = if args.quick { 2_000 } else { 10_000 };
    let gap = Duration::from_micros(200);
    let (mut s50, mut s99, mut f50, mut f99) = (vec![], vec![], vec![], vec![]);
    let (mut r50, mut r99) = (vec![], vec![]);
    for run in 0..args.runs {
        eprintln!("latency run {}/{}", run + 1, args.runs);
        // Through the embedded server.
        let (server, _dir) = embedded_server();
        let sub_client = client_for(&server.uri(), "lat-sub")
            .start()
            .expect("client");
        let (tx, rx) = oneshot::channel();
        let counter = Counter::timing(n, tx).start();
        sub_client
            .send(Subscribe::new("lat", counter.recipient()))
            .await
            .expect("alive")
            .expect("subscribed");
        let arbiter = Arbiter::new();
        let publisher = client_for(&server.uri(), "lat-pub")
            .start_in(&arbiter.handle())
            .expect("publisher");
        assert!(publisher
            .send(WaitLoggedOn::new(Duration::from_secs(10)))
            .await
            .unwrap_or(false));
        let p = publisher.clone();
        let pacer = std::thread::spawn(move || {
            for _ in 0..n {
                p.do_send(Publish::new("lat", body_with_stamp(now_ns())));
                std::thread::sleep(gap);
            }
        });
        let l = tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .expect("in time")
            .expect("alive");
        let _ = pacer.join();
        let (p50, p99) = quantiles_us(l);
        s50.push(p50);
        s99.push(p99);
        sub_client.do_send(actix_amps::client::Shutdown);
        publisher.do_send(actix_amps::client::Shutdown);

        // From the feeder: the client's receive path alone, and a raw reader's for scale.
        let addr = feeder(Feed::Paced(n, gap));
        let client = client_for(&format!("tcp://{addr}/amps/json"), "lat-feed")
            .start()
            .expect("client");
        let (tx, rx) = oneshot::channel();
        let counter = Counter::timing(n, tx).start();
        client
            .send(Subscribe::new("bench", counter.recipient()))
            .await
            .expect("alive")
            .expect("subscribed");
        let l = tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .expect("in time")
            .expect("alive");
        let (p50, p99) = quantiles_us(l);
        f50.push(p50);
        f99.push(p99);
        client.do_send(actix_amps::client::Shutdown);
        let addr = feeder(Feed::Paced(n, gap));
        let l = tokio::task::spawn_blocking(move || raw_latency_reader(addr, n))
            .await
            .expect("raw");
        let (p50, p99) = quantiles_us(l);
        r50.push(p50);
        r99.push(p99);
    }
    rows.push((
        "latency publish -> handler via server, p50".into(),
        s50,
        "us",
    ));
    rows.push((
        "latency publish -> handler via server, p99".into(),
        s99,
        "us",
    ));
    rows.push(("latency socket -> handler (feeder), p50".into(), f50, "us"));
    rows.push(("latency socket -> handler (feeder), p99".into(), f99, "us"));
    rows.push((
        "latency socket -> raw reader (feeder), p50".into(),
        r50,
        "us",
    ));
    rows.push((
        "latency socket -> raw reader (feeder), p99".into(),
        r99,
        "us",
    ));
}

/// p50 and p99 of nanosecond samples, in microseconds.
fn quantiles_us(mut l: Vec<u64>) -> (f64, f64) {
    l.sort_unstable();
    let sorted: Vec<f64> = l.iter().map(|v| *v as f64 / 1000.0).collect();
    (percentile(&sorted, 0.5), percentile(&sorted, 0.99))
}

/// Publish + flush round trips on `client`, in microseconds, sorted.
async fn flush_round_trips(client: &Addr<ClientActor>, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        client
            .send(Publish::new("pub-lat", format!("{{\"i\":{i}}}")))
            .await
            .expect("alive")
            .expect("stored");
        client
            .send(PublishFlush {
                timeout: Duration::from_secs(10),
            })
            .await
            .expect("alive")
            .expect("flushed");
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Floods topic `heavy` through the server until `stop`; returns the rate it published at.
fn flood(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let mut sent = 0u64;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let _ = raw_publish(addr, "heavy", 50_000).join();
            sent += 50_000;
        }
        sent as f64 / started.elapsed().as_secs_f64()
    })
}

/// Where the flooded subscription lives, relative to the publishing client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flooded {
    /// No flood.
    Idle,
    /// The publishing client's own subscription (one connection for both).
    SameClient,
    /// Another client on the publishing client's thread.
    OtherClientSameThread,
    /// Another client on an arbiter of its own.
    OtherClientOwnArbiter,
}

async fn publish_round_trips(n: usize, flooded: Flooded) -> (Vec<f64>, f64) {
    let (server, _dir) = embedded_server();
    let client = client_for(&server.uri(), "pub-under-load")
        .start()
        .expect("client");
    let arbiter = Arbiter::new();
    let subscriber = match flooded {
        Flooded::Idle | Flooded::SameClient => client.clone(),
        Flooded::OtherClientSameThread => client_for(&server.uri(), "flooded")
            .start()
            .expect("client"),
        Flooded::OtherClientOwnArbiter => client_for(&server.uri(), "flooded")
            .start_in(&arbiter.handle())
            .expect("client"),
    };
    let (tx, _rx) = oneshot::channel();
    let counter_arbiter = Arbiter::new();
    let counter = Counter::start_in_arbiter(&counter_arbiter.handle(), move |_| {
        Counter::counting(u64::MAX, tx)
    });
    subscriber
        .send(Subscribe::new("heavy", counter.recipient()))
        .await
        .expect("alive")
        .expect("subscribed");
    // Warm up (first logon, first writes).
    flush_round_trips(&client, 50).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flood = (flooded != Flooded::Idle).then(|| flood(server.addr(), stop.clone()));
    if flood.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rt = flush_round_trips(&client, n).await;
    stop.store(true, Ordering::Relaxed);
    let rate = flood.map_or(0.0, |f| f.join().unwrap_or(0.0));
    client.do_send(actix_amps::client::Shutdown);
    subscriber.do_send(actix_amps::client::Shutdown);
    (rt, rate)
}

async fn publish_under_load(args: &Args, rows: &mut Rows) {
    let n = if args.quick { 300 } else { 2_000 };
    let cases = [
        (Flooded::Idle, "idle"),
        (Flooded::SameClient, "its own subscription flooded"),
        (
            Flooded::OtherClientSameThread,
            "another client on its thread flooded",
        ),
        (
            Flooded::OtherClientOwnArbiter,
            "another client on another arbiter flooded",
        ),
    ];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut p99 = p50.clone();
    let mut rates = p50.clone();
    let mut ratio = p50.clone();
    for run in 0..args.runs {
        eprintln!("publish-under-load run {}/{}", run + 1, args.runs);
        let mut idle50 = 0.0;
        for (i, (case, _)) in cases.iter().enumerate() {
            let (rt, rate) = publish_round_trips(n, *case).await;
            let m = percentile(&rt, 0.5);
            if i == 0 {
                idle50 = m;
            }
            p50[i].push(m);
            p99[i].push(percentile(&rt, 0.99));
            rates[i].push(rate);
            ratio[i].push(m / idle50);
        }
    }
    for (i, (_, what)) in cases.iter().enumerate() {
        rows.push((
            format!("publish+flush round trip, {what}, p50"),
            p50[i].clone(),
            "us",
        ));
        rows.push((
            format!("publish+flush round trip, {what}, p99"),
            p99[i].clone(),
            "us",
        ));
        if i > 0 {
            rows.push((
                format!("  p50 ratio to idle ({what})"),
                ratio[i].clone(),
                "x",
            ));
            rows.push((format!("  flood rate ({what})"), rates[i].clone(), "msg/s"));
        }
    }
}

fn print(rows: &Rows, runs: usize) {
    println!("| figure | min | median | max | unit |");
    println!("|---|---|---|---|---|");
    for (what, v, unit) in rows {
        let s = summary(v);
        let f = |x: f64| {
            if *unit == "msg/s" {
                format!("{:.2}M", x / 1e6)
            } else if *unit == "x" {
                format!("{x:.2}")
            } else {
                format!("{x:.0}")
            }
        };
        println!(
            "| {what} | {} | {} | {} | {unit} |",
            f(s.min),
            f(s.median),
            f(s.max)
        );
    }
    println!("\n({runs} runs each; ratios computed per run.)");
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("subscribe_bench: {e}");
            std::process::exit(2);
        }
    };
    now_ns();
    let mut rows = Rows::new();
    let want = |s: &str| args.only.as_deref().is_none_or(|o| s.contains(o));
    System::new().block_on(async {
        if want("blast") {
            blast(&args, &mut rows).await;
        }
        if want("server") {
            from_server(&args, &mut rows).await;
        }
        if want("latency") {
            latency(&args, &mut rows).await;
        }
        if want("publish") {
            publish_under_load(&args, &mut rows).await;
        }
    });
    print(&rows, args.runs);
}
