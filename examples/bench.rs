//! The benchmark harness: client publish throughput as a ratio to a raw pipelined socket
//! writer, store overheads, failure-notification and flush latency, and memory per message.
//!
//! ```text
//! cargo run --release --example bench                      # everything, 3 runs
//! cargo run --release --example bench -- --quick --runs 1  # smaller counts
//! cargo run --release --example bench -- --uri tcp://host:9007/amps/json  # throughput only
//! ```
//!
//! The machine is shared and noisy, so every throughput figure is paired with a baseline
//! measured in the same run against the same server: the raw writer
//! ([`RawWriter`](actix_amps::server::RawWriter)) sending the same frames (sequence numbers,
//! persisted acks requested) and waiting for the same final flush. Each measurement is repeated
//! `--runs` times (raw and client alternate which goes first); the table shows min, median and
//! max, and ratios are per run. Two servers: the benchmark [`Sink`] (frames, reads `s`, acks
//! cumulatively: the client's own cost shows) and the embedded server with fsync `never`.
//! `docs/BENCHMARKS.md` explains every row. The table goes to stdout, progress to stderr, and
//! the chart to `docs/bench.svg`.
//!
//! The helpers live next to this file (`examples/bench/`), not in the library: they are
//! benchmark plumbing (an RSS reader, a hand-written SVG, statistics) that no user of the crate
//! needs. The sink is in the library (`actix_amps::server::Sink`) because it is useful to anyone
//! measuring their own publisher.

#[path = "bench/rss.rs"]
mod rss;
#[path = "bench/runs.rs"]
mod runs;
#[path = "bench/stats.rs"]
mod stats;
#[path = "bench/svg.rs"]
mod svg;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use actix_amps::client::{FsyncPolicy as StoreFsync, StoreKind};
use actix_amps::server::{FsyncPolicy, Server, ServerConfig, Sink, SinkConfig};
use bytes::Bytes;

use runs::Mode;
use stats::{percentile, summary};

struct Args {
    quick: bool,
    runs: usize,
    uri: Option<String>,
    /// Internal: run the memory measurement in this (fresh) process with this many messages.
    child_memory: Option<u64>,
    /// Only run sections whose name contains this (for profiling).
    only: Option<String>,
    /// Where to write the chart; `None`: no chart (the tracked file is only rewritten when asked).
    svg: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        runs: 3,
        uri: None,
        child_memory: None,
        only: None,
        svg: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--runs" => args.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--uri" => args.uri = Some(val()?),
            "--only" => args.only = Some(val()?),
            "--svg" => {
                args.svg = Some(match it.peek() {
                    Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                    _ => "docs/bench.svg".into(),
                })
            }
            "--child-memory" => {
                args.child_memory =
                    Some(val()?.parse().map_err(|e| format!("--child-memory: {e}"))?)
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--runs N] [--uri URI] [--only SECTION] [--svg [PATH]]\n\
                     --svg writes the chart (default path docs/bench.svg); without it no file is written"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.runs = args.runs.max(1);
    Ok(args)
}

/// Message counts for each measurement.
struct Counts {
    main: u64,
    single: u64,
    send_await: u64,
    sizes: [(usize, u64); 3],
    failures: u64,
    idle_failures: u64,
    flush_rounds: usize,
    memory: u64,
}

impl Counts {
    fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                main: 200_000,
                single: 100_000,
                send_await: 20_000,
                sizes: [(64, 200_000), (1024, 50_000), (65536, 2_000)],
                failures: 20_000,
                idle_failures: 500,
                flush_rounds: 50,
                memory: 200_000,
            }
        } else {
            Counts {
                main: 1_000_000,
                single: 200_000,
                send_await: 50_000,
                sizes: [(64, 1_000_000), (1024, 300_000), (65536, 10_000)],
                failures: 100_000,
                idle_failures: 2_000,
                flush_rounds: 200,
                memory: 1_000_000,
            }
        }
    }
}

/// Samples per measurement key, over runs.
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    fn add(&mut self, key: impl Into<String>, v: f64) {
        self.0.entry(key.into()).or_default().push(v);
    }

    fn get(&self, key: &str) -> &[f64] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }
}

fn body(size: usize) -> Bytes {
    Bytes::from(vec![b'x'; size])
}

fn size_label(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
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
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let result = match args.child_memory {
        Some(n) => actix::System::new().block_on(memory_child(n)),
        None => actix::System::new().block_on(run(args)),
    };
    if let Err(e) = result {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

/// Runs `f` only when the section is selected.
fn wanted(args: &Args, section: &str) -> bool {
    args.only.as_deref().is_none_or(|o| section.contains(o))
}

/// Messages per `PublishBatch`: 1000, fewer for big bodies (about 1 MiB per batch).
fn batch_for(size: usize) -> usize {
    (1 << 20) / size.max(1)
}

fn batch_size(size: usize) -> usize {
    batch_for(size).clamp(16, 1000)
}

async fn run(args: Args) -> Result<(), String> {
    let counts = Counts::new(args.quick);
    let mut s = Samples::default();
    let sink = Sink::start().map_err(|e| e.to_string())?;
    let external = args
        .uri
        .as_ref()
        .map(|u| Ok::<_, String>((u.clone(), addr_of(u)?)))
        .transpose()?;
    let (tp_uri, tp_addr, tp_label) = match &external {
        Some((u, a)) => (u.clone(), *a, "external"),
        None => (sink.uri(), sink.addr(), "sink"),
    };
    let file_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        if args.only.as_deref() == Some("profile") {
            // The client alone against the sink, for callgrind (no raw writer in the profile).
            let rate = runs::client_rate(
                &tp_uri,
                &format!("profile-{run}"),
                StoreKind::Memory,
                &body(128),
                counts.main,
                Mode::Batch(1000),
            )
            .await?;
            eprintln!("  profile: client {rate:.0}/s");
        }
        if wanted(&args, "main") {
            pair_sized(&mut s, "main", run, tp_addr, &tp_uri, 128, counts.main).await?;
        }
        if wanted(&args, "file") {
            for (size, prefix) in [(128, "file"), (1024, "file1024")] {
                let b = body(size);
                let count = if size > 128 {
                    counts.main / 4
                } else {
                    counts.main
                };
                let store = StoreKind::File {
                    dir: file_dir.path().join(format!("store-{size}-{run}")),
                    fsync: StoreFsync::Batch,
                };
                let mem = runs::client_rate(
                    &tp_uri,
                    &format!("mem-{size}-{run}"),
                    StoreKind::Memory,
                    &b,
                    count,
                    Mode::Batch(1000),
                )
                .await?;
                let file = runs::client_rate(
                    &tp_uri,
                    &format!("file-{size}-{run}"),
                    store,
                    &b,
                    count,
                    Mode::Batch(1000),
                )
                .await?;
                eprintln!(
                    "  {prefix}: memory {mem:.0}/s file {file:.0}/s ({:.2}x)",
                    file / mem
                );
                s.add(format!("{prefix}/memory"), mem);
                s.add(format!("{prefix}/file"), file);
                s.add(format!("{prefix}/ratio"), file / mem);
            }
            let store = StoreKind::File {
                dir: file_dir.path().join(format!("bystander-{run}")),
                fsync: StoreFsync::Batch,
            };
            let lat = runs::bystander_latencies(
                &tp_uri,
                &format!("bystander-{run}"),
                store,
                &body(128),
                counts.main / 2,
            )
            .await?;
            record_latency(&mut s, "bystander", &lat);
            // The same stream with the memory store: what the arbiter costs without a disk.
            let lat = runs::bystander_latencies(
                &tp_uri,
                &format!("bystander-mem-{run}"),
                StoreKind::Memory,
                &body(128),
                counts.main / 2,
            )
            .await?;
            record_latency(&mut s, "bystander_mem", &lat);
        }
        if wanted(&args, "sizes") {
            for (size, count) in counts.sizes {
                let key = format!("size{size}");
                pair_sized(&mut s, &key, run, tp_addr, &tp_uri, size, count).await?;
            }
        }
        if wanted(&args, "single") {
            let b = body(128);
            let raw =
                runs::raw_rate(tp_addr, &format!("raw-single-{run}"), &b, counts.single).await?;
            let rate = |name: &str, count: u64, mode: Mode| {
                let (uri, b) = (tp_uri.clone(), b.clone());
                let name = format!("{name}-{run}");
                async move { runs::client_rate(&uri, &name, StoreKind::Memory, &b, count, mode).await }
            };
            let dosend = rate("dosend", counts.single, Mode::DoSend).await?;
            let awaited = rate("await", counts.send_await, Mode::SendAwait).await?;
            let handle = rate("handle", counts.single, Mode::PublisherAwait).await?;
            let try_ = rate("try", counts.single, Mode::TryPublish).await?;
            eprintln!(
                "  single: raw {raw:.0}/s do_send {dosend:.0}/s send().await {awaited:.0}/s \
                 publisher.publish().await {handle:.0}/s try_publish {try_:.0}/s"
            );
            s.add("single/raw", raw);
            for (key, v) in [
                ("dosend", dosend),
                ("await", awaited),
                ("handle", handle),
                ("try", try_),
            ] {
                s.add(format!("single/{key}"), v);
                s.add(format!("single/{key}_ratio"), v / raw);
            }
        }
        if external.is_some() {
            continue;
        }
        if wanted(&args, "embedded") {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let server = Server::start(ServerConfig::new(dir.path()).fsync(FsyncPolicy::Never))
                .map_err(|e| e.to_string())?;
            pair_sized(
                &mut s,
                "embedded",
                run,
                server.addr(),
                &server.uri(),
                128,
                counts.main,
            )
            .await?;
            let store = StoreKind::File {
                dir: file_dir.path().join(format!("emb-store-{run}")),
                fsync: StoreFsync::Batch,
            };
            let b = body(128);
            let file = runs::client_rate(
                &server.uri(),
                &format!("emb-file-{run}"),
                store,
                &b,
                counts.main,
                Mode::Batch(1000),
            )
            .await?;
            s.add("embedded/file", file);
            s.add(
                "embedded/file_ratio",
                file / s.get("embedded/client").last().copied().unwrap_or(f64::NAN),
            );
            server.stop();
        }
        if wanted(&args, "failures") {
            let b = body(128);
            let fail10 = Sink::start_with(SinkConfig::default().fail_every(10))
                .map_err(|e| e.to_string())?;
            let lat = runs::failure_latencies(
                &fail10.uri(),
                &format!("fail-load-{run}"),
                &b,
                counts.failures,
                true,
                None,
            )
            .await?;
            record_latency(&mut s, "fail_load", &lat);
            let arbiter = actix::Arbiter::new();
            let lat = runs::failure_latencies(
                &fail10.uri(),
                &format!("fail-load-arbiter-{run}"),
                &b,
                counts.failures,
                true,
                Some(&arbiter.handle()),
            )
            .await?;
            arbiter.stop();
            record_latency(&mut s, "fail_load_arbiter", &lat);
            let fail_all =
                Sink::start_with(SinkConfig::default().fail_every(1)).map_err(|e| e.to_string())?;
            let lat = runs::failure_latencies(
                &fail_all.uri(),
                &format!("fail-idle-{run}"),
                &b,
                counts.idle_failures,
                false,
                None,
            )
            .await?;
            record_latency(&mut s, "fail_idle", &lat);
        }
        if wanted(&args, "flush") {
            let quiet = Sink::start_with(
                SinkConfig::default()
                    .ack_interval(Duration::from_secs(3600))
                    .ack_every(u64::MAX),
            )
            .map_err(|e| e.to_string())?;
            let lat = runs::flush_latencies(
                &quiet,
                &format!("flush-{run}"),
                &body(128),
                counts.flush_rounds,
                1000,
            )
            .await?;
            record_latency(&mut s, "flush", &lat);
        }
        if wanted(&args, "memory") {
            let (rss, hwm) = memory_in_child(counts.memory)?;
            eprintln!("  memory: {rss:.1} B/message over topic+body (RSS), {hwm:.1} (peak)");
            s.add("memory/rss", rss);
            s.add("memory/hwm", hwm);
        }
    }
    print_table(&args, &counts, &s, tp_label);
    if let Some(path) = args.svg.as_deref().filter(|_| external.is_none()) {
        write_svg(path, args.runs, &s)?;
    }
    Ok(())
}

/// A throughput pair, raw and client (alternating which goes first); adds `<key>/raw`,
/// `<key>/client` and `<key>/ratio`.
async fn pair_sized(
    s: &mut Samples,
    key: &str,
    run: usize,
    addr: SocketAddr,
    uri: &str,
    size: usize,
    count: u64,
) -> Result<(), String> {
    let b = body(size);
    let mode = Mode::Batch(batch_size(size));
    let raw_name = format!("raw-{key}-{run}");
    let client_name = format!("client-{key}-{run}");
    let raw_first = run.is_multiple_of(2);
    let mut raw = 0.0;
    if raw_first {
        raw = runs::raw_rate(addr, &raw_name, &b, count).await?;
    }
    let client = runs::client_rate(uri, &client_name, StoreKind::Memory, &b, count, mode).await?;
    if !raw_first {
        raw = runs::raw_rate(addr, &raw_name, &b, count).await?;
    }
    eprintln!(
        "  {key}: raw {raw:.0}/s client {client:.0}/s ({:.2}x)",
        client / raw
    );
    s.add(format!("{key}/raw"), raw);
    s.add(format!("{key}/client"), client);
    s.add(format!("{key}/ratio"), client / raw);
    Ok(())
}

fn record_latency(s: &mut Samples, key: &str, sorted: &[f64]) {
    let (p50, p99, max) = (
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        sorted.last().copied().unwrap_or(0.0),
    );
    eprintln!(
        "  {key}: n={} p50 {p50:.1} µs p99 {p99:.1} µs max {max:.1} µs",
        sorted.len()
    );
    s.add(format!("{key}/n"), sorted.len() as f64);
    s.add(format!("{key}/p50"), p50);
    s.add(format!("{key}/p99"), p99);
    s.add(format!("{key}/max"), max);
}

/// Runs the memory measurement in a fresh child process; returns bytes per message beyond the
/// body (topics are interned, so nothing per message) for RSS and for peak RSS.
fn memory_in_child(count: u64) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["--child-memory", &count.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY "))
        .ok_or_else(|| format!("memory child printed no result (status {})", out.status))?;
    let v: Vec<f64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
    match v.as_slice() {
        [rss, hwm] => Ok((*rss, *hwm)),
        _ => Err(format!("memory child: bad line {line:?}")),
    }
}

/// The child side: `count` distinct 128-byte bodies held unacknowledged (the sink stalls its
/// acks); prints `MEMORY <rss per message - 128> <peak per message - 128>`.
async fn memory_child(count: u64) -> Result<(), String> {
    let sink = Sink::start().map_err(|e| e.to_string())?;
    let client = runs::start_client(
        &sink.uri(),
        "memory",
        StoreKind::Memory,
        count as usize + 10,
    )
    .await?;
    sink.stall_acks();
    let template = [b'x'; 128];
    let (rss0, _) = rss::rss_and_peak().ok_or("no /proc/self/status")?;
    let reset = rss::reset_peak();
    let mut left = count;
    while left > 0 {
        let n = left.min(1000);
        left -= n;
        let messages = (0..n)
            .map(|_| {
                actix_amps::client::Publish::new(runs::TOPIC, Bytes::copy_from_slice(&template))
            })
            .collect();
        client
            .send(actix_amps::client::PublishBatch::new(messages))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    // Let the connection write what is queued, so only the store's memory remains.
    while sink.frames_received() < count + 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = client
        .send(actix_amps::client::GetStats)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if stats.unacknowledged != count {
        return Err(format!("expected {count} unacknowledged, got {stats:?}"));
    }
    let (rss1, hwm1) = rss::rss_and_peak().ok_or("no /proc/self/status")?;
    let per = |bytes: u64| bytes.saturating_sub(rss0) as f64 / count as f64 - 128.0;
    let hwm = if reset { per(hwm1) } else { f64::NAN };
    println!("MEMORY {} {}", per(rss1), hwm);
    Ok(())
}

struct Row {
    what: String,
    server: &'static str,
    unit: &'static str,
    key: String,
    ratio: Option<String>,
    target: Option<(&'static str, f64, bool)>,
}

fn fmt_v(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" => format!("{:.0}k", v / 1e3),
        "x" => format!("{v:.2}"),
        _ => format!("{v:.1}"),
    }
}

fn print_table(args: &Args, counts: &Counts, s: &Samples, tp: &'static str) {
    let mut rows = Vec::new();
    let mut row = |what: String,
                   server: &'static str,
                   unit: &'static str,
                   key: &str,
                   ratio: Option<&str>,
                   target: Option<(&'static str, f64, bool)>| {
        rows.push(Row {
            what,
            server,
            unit,
            key: key.to_owned(),
            ratio: ratio.map(str::to_owned),
            target,
        })
    };
    let m = counts.main;
    row(
        format!("1. raw writer, 128 B x {m}"),
        tp,
        "msg/s",
        "main/raw",
        None,
        None,
    );
    row(
        format!("1. client PublishBatch(1000), memory store, 128 B x {m}"),
        tp,
        "msg/s",
        "main/client",
        Some("main/ratio"),
        Some((">= 0.9x raw", 0.9, true)),
    );
    row(
        format!("1. raw writer, 128 B x {m}"),
        "embedded",
        "msg/s",
        "embedded/raw",
        None,
        None,
    );
    row(
        format!("1. client PublishBatch(1000), memory store, 128 B x {m}"),
        "embedded",
        "msg/s",
        "embedded/client",
        Some("embedded/ratio"),
        Some((">= 0.5x raw (earlier issue)", 0.5, true)),
    );
    for (size, prefix) in [(128, "file"), (1024, "file1024")] {
        let label = size_label(size);
        let n = if size > 128 { m / 4 } else { m };
        row(
            format!("2. client, memory store (same run as the file store), {label} x {n}"),
            tp,
            "msg/s",
            &format!("{prefix}/memory"),
            None,
            None,
        );
        row(
            format!("2. client, file store fsync=batch, {label} x {n}"),
            tp,
            "msg/s",
            &format!("{prefix}/file"),
            Some(&format!("{prefix}/ratio")),
            Some((">= 0.8x memory", 0.8, true)),
        );
    }
    row(
        format!("2. client, file store fsync=batch, 128 B x {m}"),
        "embedded",
        "msg/s",
        "embedded/file",
        Some("embedded/file_ratio"),
        Some((">= 0.8x memory", 0.8, true)),
    );
    row(
        format!(
            "2. unrelated actor on the client's arbiter, ping latency p99, during a file-store stream of {}",
            m / 2
        ),
        tp,
        "µs",
        "bystander/p99",
        None,
        Some(("p99 < 1 ms", 1000.0, false)),
    );
    row(
        "2. unrelated actor on the client's arbiter, ping latency max".into(),
        tp,
        "µs",
        "bystander/max",
        None,
        None,
    );
    row(
        "2. the same, memory store (no disk; for comparison), ping latency p99".into(),
        tp,
        "µs",
        "bystander_mem/p99",
        None,
        None,
    );
    for (size, count) in counts.sizes {
        let label = size_label(size);
        row(
            format!("6. raw writer, {label} x {count}"),
            tp,
            "msg/s",
            &format!("size{size}/raw"),
            None,
            None,
        );
        row(
            format!(
                "6. client PublishBatch({}), {label} x {count}",
                batch_size(size)
            ),
            tp,
            "msg/s",
            &format!("size{size}/client"),
            Some(&format!("size{size}/ratio")),
            (size == 1024).then_some((">= 0.9x raw", 0.9, true)),
        );
    }
    row(
        format!("single: raw writer, 128 B x {}", counts.single),
        tp,
        "msg/s",
        "single/raw",
        None,
        None,
    );
    row(
        format!(
            "single: Publish via do_send (send().await every 1000th), 128 B x {}",
            counts.single
        ),
        tp,
        "msg/s",
        "single/dosend",
        Some("single/dosend_ratio"),
        Some((">= 0.8x raw", 0.8, true)),
    );
    row(
        format!(
            "single: Publish via send().await each, 128 B x {}",
            counts.send_await
        ),
        tp,
        "msg/s",
        "single/await",
        Some("single/await_ratio"),
        None,
    );
    row(
        format!(
            "single: Publisher::publish().await each (fastest awaited call), 128 B x {}",
            counts.single
        ),
        tp,
        "msg/s",
        "single/handle",
        Some("single/handle_ratio"),
        Some((">= 0.6x raw", 0.6, true)),
    );
    row(
        format!(
            "single: Publisher::try_publish each (never waits), 128 B x {}",
            counts.single
        ),
        tp,
        "msg/s",
        "single/try",
        Some("single/try_ratio"),
        Some((">= 0.9x raw", 0.9, true)),
    );
    row(
        format!(
            "3. failure notification p50, under load ({} msgs, 1 in 10 refused)",
            counts.failures
        ),
        "sink",
        "µs",
        "fail_load/p50",
        None,
        None,
    );
    row(
        "3. failure notification p99, under load".into(),
        "sink",
        "µs",
        "fail_load/p99",
        None,
        Some(("p99 < 200 µs", 200.0, false)),
    );
    row(
        "3. failure notification max, under load".into(),
        "sink",
        "µs",
        "fail_load/max",
        None,
        None,
    );
    row(
        "3. failure notification p50, under load, client on its own arbiter (`start_in`)".into(),
        "sink",
        "µs",
        "fail_load_arbiter/p50",
        None,
        None,
    );
    row(
        "3. failure notification p99, under load, client on its own arbiter".into(),
        "sink",
        "µs",
        "fail_load_arbiter/p99",
        None,
        Some(("p99 < 200 µs", 200.0, false)),
    );
    row(
        format!(
            "3. failure notification p50, one at a time ({} refused)",
            counts.idle_failures
        ),
        "sink",
        "µs",
        "fail_idle/p50",
        None,
        None,
    );
    row(
        "3. failure notification p99, one at a time".into(),
        "sink",
        "µs",
        "fail_idle/p99",
        None,
        Some(("p99 < 20 µs", 20.0, false)),
    );
    row(
        format!(
            "4. memory per unacked message beyond body, RSS ({} x 128 B)",
            counts.memory
        ),
        "sink",
        "B",
        "memory/rss",
        None,
        Some(("<= 64 B", 64.0, false)),
    );
    row(
        "4. memory per unacked message beyond body, peak RSS".into(),
        "sink",
        "B",
        "memory/hwm",
        None,
        None,
    );
    row(
        format!(
            "5. flush: last persisted ack sent -> PublishFlush returns, p50 ({} x 1000 msgs)",
            counts.flush_rounds
        ),
        "sink",
        "µs",
        "flush/p50",
        None,
        None,
    );
    row(
        "5. flush: p99".into(),
        "sink",
        "µs",
        "flush/p99",
        None,
        Some(("within 1 ms", 1000.0, false)),
    );
    row(
        "5. flush: max".into(),
        "sink",
        "µs",
        "flush/max",
        None,
        None,
    );

    println!();
    println!(
        "Runs: {} ({}); figures are min / median / max over runs; ratios are per run.",
        args.runs,
        if args.quick {
            "quick counts"
        } else {
            "full counts"
        }
    );
    println!();
    println!("| measurement | server | unit | min | median | max | ratio min / median / max | target | met (median) |");
    println!("|---|---|---|---:|---:|---:|---|---|---|");
    for r in rows {
        let v = s.get(&r.key);
        if v.is_empty() {
            continue;
        }
        let sm = summary(v);
        let ratio = r.ratio.as_deref().map(|k| summary(s.get(k)));
        let ratio_txt = ratio.map_or(String::new(), |x| {
            format!("{:.2} / {:.2} / {:.2}", x.min, x.median, x.max)
        });
        let (target_txt, met) = match r.target {
            Some((txt, bound, higher_is_better)) => {
                let x = ratio.map_or(sm.median, |x| x.median);
                let ok = if higher_is_better {
                    x >= bound
                } else {
                    x <= bound
                };
                (txt.to_owned(), if ok { "yes" } else { "**no**" }.to_owned())
            }
            None => (String::new(), String::new()),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.what,
            r.server,
            r.unit,
            fmt_v(sm.min, r.unit),
            fmt_v(sm.median, r.unit),
            fmt_v(sm.max, r.unit),
            ratio_txt,
            target_txt,
            met
        );
    }
}

fn write_svg(path: &str, runs: usize, s: &Samples) -> Result<(), String> {
    let med = |k: &str| summary(s.get(k)).median;
    let mut bars = Vec::new();
    for (size, key) in [
        (64, "size64"),
        (128, "main"),
        (1024, "size1024"),
        (65536, "size65536"),
    ] {
        bars.push(svg::ThroughputBar {
            label: size_label(size),
            client: med(&format!("{key}/client")),
            raw: med(&format!("{key}/raw")),
        });
    }
    let lat = [
        ("failure, loaded", "fail_load"),
        ("failure, idle", "fail_idle"),
        ("flush", "flush"),
    ]
    .iter()
    .map(|(label, key)| svg::LatencyBar {
        label: (*label).to_owned(),
        p50: med(&format!("{key}/p50")),
        p99: med(&format!("{key}/p99")),
        max: med(&format!("{key}/max")),
    })
    .collect::<Vec<_>>();
    let note = format!(
        "medians of {} run(s) against the benchmark sink on one 2-core machine; ratios are per run (docs/BENCHMARKS.md)",
        runs
    );
    let text = svg::render(
        "actix-amps publish throughput (client vs raw writer) and latency",
        &note,
        &bars,
        &lat,
        100.0,
    );
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
    eprintln!("wrote {path}");
    Ok(())
}
