//! Storage figures of the embedded server: start-up time after N logged writes with and
//! without a snapshot, and the disk bound held by retention in a long-running publish.
//!
//! ```text
//! cargo run --release --example storage_bench -- [--count N] [--runs R] [--soak-mb MB]
//! ```
//! Defaults: N = 1,000,000 writes (140-byte JSON bodies to a SOW topic keyed by `/id` over
//! 10,000 keys), R = 3 start-ups per case (min / median / max printed), and a soak of 1,000 MB
//! of log written through 4 MiB segments with `--retain 32MiB` and a snapshot every 16 MiB,
//! sampling the data directory's size every 50 ms.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use actix_amps::protocol::{encode_parts, AckType, AckTypes, AmpsCodec, Command, Header, Status};
use actix_amps::server::txlog::Retention;
use actix_amps::server::{FsyncPolicy, Server, ServerConfig};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Publishes `seqs` (bodies keyed over 10,000 ids) as `client`, waits for the flush.
async fn publish(addr: SocketAddr, client: &str, count: u64) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (rd, mut wr) = stream.into_split();
    let mut frames = FramedRead::with_capacity(rd, AmpsCodec::default(), 256 * 1024);
    let mut buf = BytesMut::with_capacity(128 * 1024);
    let logon = Header {
        command: Some(Command::Logon),
        cid: Some("logon".into()),
        client_name: Some(client.into()),
        message_type: Some("json".into()),
        ack_type: AckTypes::PROCESSED,
        version: Some("bench:rust".into()),
        ..Header::default()
    };
    encode_parts(&logon, b"", &mut buf);
    wr.write_all(&buf).await.map_err(|e| e.to_string())?;
    buf.clear();
    let ack = frames
        .next()
        .await
        .ok_or("no logon ack")?
        .map_err(|e| e.to_string())?;
    let first = ack.header.seq.unwrap_or(0) + 1;
    let reader = tokio::spawn(async move {
        while let Some(f) = frames.next().await {
            let f = f.map_err(|e| e.to_string())?;
            if f.header.status == Some(Status::Failure) {
                return Err(format!("write failed: {}", f.header.to_json()));
            }
            if f.header.cid.as_deref() == Some("flush") && f.is_ack_of(AckType::Persisted) {
                return Ok(());
            }
        }
        Err("closed before the flush ack".to_string())
    });
    let mut h = Header {
        command: Some(Command::Publish),
        topic: Some("orders".into()),
        ack_type: AckTypes::PERSISTED,
        ..Header::default()
    };
    let pad = "x".repeat(110);
    for seq in first..first + count {
        h.seq = Some(seq);
        let body = format!("{{\"id\":{},\"pad\":\"{pad}\"}}", seq % 10_000);
        encode_parts(&h, body.as_bytes(), &mut buf);
        if buf.len() >= 64 * 1024 {
            wr.write_all(&buf).await.map_err(|e| e.to_string())?;
            buf.clear();
        }
    }
    let flush = Header {
        command: Some(Command::Flush),
        cid: Some("flush".into()),
        ack_type: AckTypes::PERSISTED,
        ..Header::default()
    };
    encode_parts(&flush, b"", &mut buf);
    wr.write_all(&buf).await.map_err(|e| e.to_string())?;
    reader.await.map_err(|e| e.to_string())?
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn min_med_max(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "min {:.0} ms, median {:.0} ms, max {:.0} ms",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

fn main() -> Result<(), String> {
    let count = arg("--count", 1_000_000);
    let runs = arg("--runs", 3) as usize;
    let soak_mb = arg("--soak-mb", 1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    // Start-up after `count` writes.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = || {
        ServerConfig::new(dir.path())
            .sow("^orders$", &["/id"])
            .fsync(FsyncPolicy::Never)
            .snapshot_every(u64::MAX / 2)
            .retain(Retention::All)
    };
    let server = Server::start(config()).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    rt.block_on(publish(server.addr(), "bench", count))?;
    println!(
        "logged {count} writes in {:.1} s; log {:.1} MB",
        t0.elapsed().as_secs_f64(),
        dir_bytes(dir.path()) as f64 / 1e6
    );
    drop(server);
    let times = |label: &str| -> Result<(), String> {
        let mut ms = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let s = Server::start(config()).map_err(|e| e.to_string())?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(s.last_sequence("bench"), Some(count));
            drop(s);
        }
        println!("start-up {label}: {} ({runs} runs)", min_med_max(ms));
        Ok(())
    };
    times("without a snapshot (replays every write)")?;
    let s = Server::start(config()).map_err(|e| e.to_string())?;
    // One more write, so the snapshot is at the log's end.
    rt.block_on(publish(s.addr(), "bench2", 1))?;
    s.snapshot()
        .map_err(|e| e.to_string())?
        .ok_or("no snapshot")?;
    drop(s);
    let mut ms = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let s = Server::start(config()).map_err(|e| e.to_string())?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(s.last_sequence("bench"), Some(count));
        drop(s);
    }
    println!(
        "start-up with a snapshot (SOW 10,000 records): {} ({runs} runs)",
        min_med_max(ms)
    );
    drop(dir);

    // The disk bound in a long-running publish.
    if soak_mb > 0 {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let server = Server::start(
            ServerConfig::new(dir.path())
                .sow("^orders$", &["/id"])
                .log_segment_bytes(4 << 20)
                .snapshot_every(16 << 20)
                .retain(Retention::Bytes(32 << 20)),
        )
        .map_err(|e| e.to_string())?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            let path = dir.path().to_owned();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(dir_bytes(&path));
                    std::thread::sleep(Duration::from_millis(50));
                }
                peak
            })
        };
        // ~180 log bytes per write.
        let writes = soak_mb * 1_000_000 / 180;
        let t0 = Instant::now();
        let chunk = 200_000;
        let mut done = 0;
        while done < writes {
            rt.block_on(publish(server.addr(), "soak", chunk.min(writes - done)))?;
            done += chunk;
        }
        let written = server.durable_lsn().unwrap_or(0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().map_err(|_| "sampler panicked")?;
        println!(
            "soak: {written} writes (~{soak_mb} MB of log) in {:.0} s; data directory peak {:.1} MB, at the end {:.1} MB (segments 4 MiB, --retain 32MiB, snapshot every 16 MiB)",
            t0.elapsed().as_secs_f64(),
            peak as f64 / 1e6,
            dir_bytes(dir.path()) as f64 / 1e6
        );
    }
    Ok(())
}
