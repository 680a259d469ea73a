//! Throughput of the embedded server against the raw pipelined writer.
//!
//! ```text
//! cargo run --release --example server_bench -- [--count N] [--fsync batch|never] [--uri tcp://host:port/amps/json]
//! ```
//! Without `--fsync`, runs both policies. Without `--uri`, starts the server in-process on
//! 127.0.0.1:0 with a temporary data directory. Publishes N (default 1,000,000) 128-byte bodies
//! with persisted acks, ends with a flush, and prints msgs/s and MB/s.

use std::net::{SocketAddr, ToSocketAddrs};

use actix_amps::server::{FsyncPolicy, RawWriter, Server, ServerConfig};
use bytes::Bytes;

struct Args {
    count: u64,
    fsync: Option<FsyncPolicy>,
    uri: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        count: 1_000_000,
        fsync: None,
        uri: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--count" => args.count = val()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--fsync" => args.fsync = Some(val()?.parse()?),
            "--uri" => args.uri = Some(val()?),
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
