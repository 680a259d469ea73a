//! Throughput of the embedded server against the raw pipelined writer.
//!
//! ```text
//! cargo run --release --example server_bench -- [--count N] [--fsync batch|never] [--uri tcp://host:port/amps/json]
//! cargo run --release --example server_bench -- --only subscribers [--count N] [--runs 3]
//! cargo run --release --example server_bench -- --only replay [--count N] [--runs 3]
//! ```
//! **ingest** (the default): without `--fsync`, runs both policies. Without `--uri`, starts the
//! server in-process on 127.0.0.1:0 with a temporary data directory. Publishes N (default
//! 1,000,000) 128-byte bodies with persisted acks, ends with a flush, and prints msgs/s and MB/s.
//!
//! **subscribers**: the same publisher (fsync `never`) with 0, 1, 4 and 16 subscriber
//! connections: one subscribes to the topic, the others with content filters (`/n > i`, each
//! evaluated on every message, and matching all of them, so every subscriber receives every
//! message). A subscriber's rate is N over the time from the first publish to its last
//! delivery; the table gives the mean rate per subscriber as a ratio to the ingest rate with no
//! subscriber, measured in the same run, min/median/max over `--runs`.
//!
//! **replay**: N messages are logged, then one subscriber asks for bookmark `0` (EPOCH) and
//! the time from its subscribe to its N-th delivery gives messages per second.
//!
//! Subscribers are plain threads counting frames by their length prefix, so they cost the
//! benchmark as little as possible; on a 2-core machine they still share the cores with the
//! server and the publisher.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Instant;

use actix_amps::server::{FsyncPolicy, RawWriter, Server, ServerConfig};
use bytes::Bytes;

struct Args {
    count: u64,
    fsync: Option<FsyncPolicy>,
    uri: Option<String>,
    only: String,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        count: 1_000_000,
        fsync: None,
        uri: None,
        only: "ingest".into(),
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--count" => args.count = val()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--fsync" => args.fsync = Some(val()?.parse()?),
            "--uri" => args.uri = Some(val()?),
            "--only" => args.only = val()?,
            "--runs" => args.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn addr_of(uri: &str) -> Result<SocketAddr, String> {
    let parsed = actix_amps::protocol::parse_uri(uri).map_err(|e| e.to_string())?;
    (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{uri}: no address"))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("server_bench: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    match args.only.as_str() {
        "ingest" => {}
        "subscribers" => return subscribers(&args),
        "replay" => return replay(&args),
        other => {
            return Err(format!(
                "--only {other:?}: expected ingest, subscribers or replay"
            ))
        }
    }
    let body = Bytes::from(vec![b'x'; 128]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let policies = match args.fsync {
        Some(p) => vec![p],
        None => vec![FsyncPolicy::Batch, FsyncPolicy::Never],
    };
    for policy in policies {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (server, addr) = match &args.uri {
            Some(uri) => (None, addr_of(uri)?),
            None => {
                let s = Server::start(ServerConfig::new(dir.path()).fsync(policy))
                    .map_err(|e| e.to_string())?;
                let a = s.addr();
                (Some(s), a)
            }
        };
        let run = rt
            .block_on(RawWriter::run(
                addr,
                "bench-raw",
                "bench",
                body.clone(),
                args.count,
            ))
            .map_err(|e| e.to_string())?;
        println!(
            "fsync={:<5} messages={} elapsed={:.3}s {:.0} msgs/s {:.1} MB/s ({} acks)",
            format!("{policy:?}").to_lowercase(),
            run.messages,
            run.elapsed.as_secs_f64(),
            run.msgs_per_sec(),
            run.mb_per_sec(),
            run.acks
        );
        drop(server);
    }
    Ok(())
}

/// A subscriber thread: logs on, sends `subscribe`, counts `expect` deliveries (every frame after
/// the subscribe's processed ack), returns when the last one arrived.
fn subscriber(
    addr: SocketAddr,
    name: String,
    subscribe: String,
    expect: u64,
    ready: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<Result<Instant, String>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_nodelay(true).ok();
        let frame = |h: &str| {
            let mut b = (h.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(h.as_bytes());
            b
        };
        let logon = format!(
            r#"{{"c":"logon","cid":"l","client_name":"{name}","mt":"json","a":"processed","version":"bench:rust"}}"#
        );
        s.write_all(&frame(&logon)).map_err(|e| e.to_string())?;
        let mut rd =
            std::io::BufReader::with_capacity(1 << 20, s.try_clone().map_err(|e| e.to_string())?);
        let mut next_frame = |buf: &mut Vec<u8>| -> Result<(), String> {
            let mut len = [0u8; 4];
            rd.read_exact(&mut len).map_err(|e| e.to_string())?;
            buf.resize(u32::from_be_bytes(len) as usize, 0);
            rd.read_exact(buf).map_err(|e| e.to_string())
        };
        let mut buf = Vec::new();
        next_frame(&mut buf)?; // logon ack
        s.write_all(&frame(&subscribe)).map_err(|e| e.to_string())?;
        next_frame(&mut buf)?; // processed ack
        if !buf.windows(9).any(|w| w == b"\"success\"") {
            return Err(format!(
                "subscribe refused: {}",
                String::from_utf8_lossy(&buf)
            ));
        }
        let _ = ready.send(());
        for _ in 0..expect {
            next_frame(&mut buf)?;
        }
        Ok(Instant::now())
    })
}

fn body_json() -> Bytes {
    let mut b = br#"{"n":100,"pad":""#.to_vec();
    b.resize(128 - 2, b'x');
    b.extend_from_slice(br#""}"#);
    Bytes::from(b)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Publishes `count` messages with `subs` subscribers attached; returns (ingest msgs/s, mean
/// per-subscriber delivery msgs/s).
fn one_fanout_run(
    rt: &tokio::runtime::Runtime,
    count: u64,
    subs: usize,
) -> Result<(f64, f64), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Subscriber threads that fall behind (16 of them on 2 cores) would otherwise be
    // disconnected as slow consumers, or by the memory budget; the benchmark measures
    // throughput, not those limits.
    let server = Server::start(
        ServerConfig::new(dir.path())
            .fsync(FsyncPolicy::Never)
            .max_unsent_bytes(4 << 30)
            .max_buffered_bytes(16 << 30),
    )
    .map_err(|e| e.to_string())?;
    let addr = server.addr();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..subs)
        .map(|i| {
            let filter = if i == 0 { String::new() } else { format!(r#","filter":"/n > {i}""#) };
            let sub = format!(
                r#"{{"c":"subscribe","t":"bench","cid":"s{i}"{filter},"a":"processed","sub_id":"s{i}"}}"#
            );
            subscriber(addr, format!("bench-sub-{i}"), sub, count, ready_tx.clone())
        })
        .collect();
    for _ in 0..subs {
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .map_err(|_| "a subscriber did not start")?;
    }
    let start = Instant::now();
    let run = rt
        .block_on(RawWriter::run(
            addr,
            "bench-raw",
            "bench",
            body_json(),
            count,
        ))
        .map_err(|e| e.to_string())?;
    let ingest = run.msgs_per_sec();
    let mut rates = Vec::new();
    for h in handles {
        let done = h.join().map_err(|_| "subscriber panicked")??;
        rates.push(count as f64 / done.duration_since(start).as_secs_f64());
    }
    let mean = if rates.is_empty() {
        0.0
    } else {
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    Ok((ingest, mean))
}

fn subscribers(args: &Args) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!("| subscribers | ingest msgs/s (mean of runs) | per-subscriber msgs/s (median) | ratio to ingest without subscribers min / median / max |");
    println!("|---|---|---|---|");
    let counts: Vec<usize> = match std::env::var("BENCH_SUBSCRIBERS") {
        Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => vec![1, 4, 16],
    };
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    let mut ingest_k: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    let mut deliver_k: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    let mut base_all = Vec::new();
    for r in 0..args.runs {
        let (base, _) = one_fanout_run(&rt, args.count, 0)?;
        base_all.push(base);
        for (i, k) in counts.iter().enumerate() {
            let (ingest, per_sub) = one_fanout_run(&rt, args.count, *k)?;
            ratios[i].push(per_sub / base);
            ingest_k[i].push(ingest);
            deliver_k[i].push(per_sub);
            eprintln!("run {r}: {k} subscribers: ingest {ingest:.0}/s, per subscriber {per_sub:.0}/s (no subscribers: {base:.0}/s)");
        }
    }
    let (_, base_med, _) = stats(base_all.clone());
    println!("| 0 | {base_med:.0} | - | 1.00 (baseline) |");
    for (i, k) in counts.iter().enumerate() {
        let (lo, med, hi) = stats(ratios[i].clone());
        let ingest = ingest_k[i].iter().sum::<f64>() / ingest_k[i].len() as f64;
        let (_, d, _) = stats(deliver_k[i].clone());
        println!("| {k} | {ingest:.0} | {d:.0} | {lo:.2} / {med:.2} / {hi:.2} |");
    }
    Ok(())
}

fn replay(args: &Args) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rates = Vec::new();
    let mut ratios = Vec::new();
    for r in 0..args.runs {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let server = Server::start(ServerConfig::new(dir.path()).fsync(FsyncPolicy::Never))
            .map_err(|e| e.to_string())?;
        let logged = rt
            .block_on(RawWriter::run(
                server.addr(),
                "bench-raw",
                "bench",
                body_json(),
                args.count,
            ))
            .map_err(|e| e.to_string())?;
        let (tx, _rx) = std::sync::mpsc::channel();
        let sub = r#"{"c":"subscribe","t":"bench","cid":"r","a":"processed","sub_id":"r","bookmark":"0"}"#;
        let start = Instant::now();
        let done = subscriber(
            server.addr(),
            "bench-replay".into(),
            sub.into(),
            args.count,
            tx,
        )
        .join()
        .map_err(|_| "subscriber panicked")??;
        let rate = args.count as f64 / done.duration_since(start).as_secs_f64();
        let ingest = logged.msgs_per_sec();
        eprintln!(
            "run {r}: replayed {} messages at {rate:.0} msgs/s (logged at {ingest:.0} msgs/s)",
            args.count
        );
        rates.push(rate);
        ratios.push(rate / ingest);
    }
    let (lo, med, hi) = stats(rates);
    let (rlo, rmed, rhi) = stats(ratios);
    println!(
        "| bookmark replay (EPOCH) of {} logged messages | {lo:.0} / {med:.0} / {hi:.0} msgs/s | {rlo:.2} / {rmed:.2} / {rhi:.2} x the ingest rate of the same run (min / median / max) |",
        args.count
    );
    Ok(())
}
