//! `actix-amps publish`: one message per stdin line, failed writes as JSON lines on stdout.
//!
//! Exit status: 0 when every line was persisted, 2 when any write failed (each failure is on
//! stdout), 1 on any other error (bad arguments, no server within the flush timeout, ...).

use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientConfig, FailedWrite, GetStats, Publish, PublishBatch, PublishFlush, ReconnectPolicy,
    StoreKind, SubscribeFailedWrites, WaitLoggedOn,
};
use actix_amps::protocol::{parse_uri, redact_uri};
use actix_amps::tls::TlsClientConfig;
use clap::Args;
use tokio::io::AsyncBufReadExt;

/// Arguments of `publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Server URI, e.g. tcp://127.0.0.1:9007/amps/json; repeat for failover.
    #[arg(long, required = true)]
    uri: Vec<String>,
    /// Topic to publish to.
    #[arg(long)]
    topic: String,
    /// Client name (keep it stable across runs when using a file store).
    #[arg(long, default_value = "actix-amps-publish")]
    client_name: String,
    /// Publish store: none, memory, or file:DIR.
    #[arg(long, default_value = "memory")]
    store: String,
    /// Deadline for the final flush, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    flush_timeout: u64,
    /// Print `stored FIRST LAST` on stderr each time a batch of lines is in the store (with a
    /// file store: on disk), for scripts and crash tests that must know what was accepted.
    #[arg(long)]
    report_stored: bool,
    /// Lines per batch (one actor message each).
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Trust the certificate authorities in this PEM file for tcps:// URIs; repeatable.
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Vec<std::path::PathBuf>,
}

/// Parses `none`, `memory` or `file:DIR`.
pub fn parse_store(s: &str) -> Result<StoreKind, String> {
    match s {
        "none" => Ok(StoreKind::None),
        "memory" => Ok(StoreKind::Memory),
        _ => match s.strip_prefix("file:") {
            Some(dir) if !dir.is_empty() => Ok(StoreKind::file(dir)),
            _ => Err(format!(
                "--store must be none, memory or file:DIR, not {s:?}"
            )),
        },
    }
}

/// Builds a client config from repeated `--uri`s and `--tls-ca`s.
pub fn client_config(
    name: &str,
    uris: &[String],
    tls_ca: &[std::path::PathBuf],
) -> Result<ClientConfig, String> {
    let config = uris.iter().try_fold(ClientConfig::new(name), |cfg, u| {
        parse_uri(u)
            .map(|uri| cfg.parsed_uri(uri))
            .map_err(|e| format!("--uri {:?}: {e}", redact_uri(u)))
    })?;
    if tls_ca.is_empty() {
        return Ok(config);
    }
    let tls = TlsClientConfig::from_pem_files(tls_ca).map_err(|e| format!("--tls-ca: {e}"))?;
    Ok(config.tls(tls))
}

/// Prints each failed write as one JSON line.
struct Printer {
    printed: u64,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<FailedWrite> for Printer {
    type Result = ();

    fn handle(&mut self, f: FailedWrite, _: &mut Context<Self>) {
        let m = f.message.as_ref();
        let line = serde_json::json!({
            "sequence": f.sequence,
            "reason": f.reason.as_str(),
            "operation": m.map(|m| m.operation.as_str()),
            "topic": m.map(|m| &*m.topic),
            "data": m.map(|m| String::from_utf8_lossy(&m.data).into_owned()),
            "correlation_id": m.and_then(|m| m.opts().correlation_id.clone()),
        });
        println!("{line}");
        self.printed += 1;
    }
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Printed;

impl Handler<Printed> for Printer {
    type Result = u64;

    fn handle(&mut self, _: Printed, _: &mut Context<Self>) -> u64 {
        self.printed
    }
}

/// Runs the command.
pub fn run(args: PublishArgs) -> Result<ExitCode, String> {
    crate::init_logging_quiet();
    let store = parse_store(&args.store)?;
    let timeout = Duration::from_millis(args.flush_timeout);
    let config = client_config(&args.client_name, &args.uri, &args.tls_ca)?
        .store(store)
        // Without a server, give up when the flush would time out anyway.
        .reconnect(ReconnectPolicy {
            max_retry_time: Some(timeout),
            ..ReconnectPolicy::default()
        });
    let opts = Options {
        topic: args.topic,
        timeout,
        report_stored: args.report_stored,
        batch: args.batch.max(1),
    };
    System::new().block_on(publish(config, opts))
}

struct Options {
    topic: String,
    timeout: Duration,
    report_stored: bool,
    batch: usize,
}

/// Starts the client and publishes; a failure says why the connection failed, if it did.
async fn publish(config: ClientConfig, opts: Options) -> Result<ExitCode, String> {
    let storeless = config.store == StoreKind::None;
    let client = config.start().map_err(|e| e.to_string())?;
    let watch = crate::last_error::watch(&client).await?;
    match publish_lines(&client, storeless, opts).await {
        Err(e) => Err(crate::last_error::explain(&watch, e).await),
        ok => ok,
    }
}

async fn publish_lines(
    client: &Addr<actix_amps::client::ClientActor>,
    storeless: bool,
    opts: Options,
) -> Result<ExitCode, String> {
    let Options {
        topic,
        timeout,
        report_stored,
        batch: batch_size,
    } = opts;
    let printer = Printer { printed: 0 }.start();
    client
        .send(SubscribeFailedWrites(printer.clone().recipient()))
        .await
        .map_err(|e| e.to_string())?;
    // Without a store a write made before the logon would be refused, not kept: wait for it.
    if storeless
        && !client
            .send(WaitLoggedOn { timeout })
            .await
            .map_err(|e| e.to_string())?
    {
        return Err(format!("not logged on within {} ms", timeout.as_millis()));
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| format!("reading stdin: {e}"))?;
        let end = line.is_none();
        if let Some(line) = line {
            batch.push(Publish::new(topic.clone(), line));
        }
        if batch.len() >= batch_size || (end && !batch.is_empty()) {
            let msgs = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            let stored = client
                .send(PublishBatch::new(msgs))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if let (true, Some((first, last))) = (report_stored, stored) {
                eprintln!("stored {first} {last}");
            }
        }
        if end {
            break;
        }
    }
    client
        .send(PublishFlush { timeout })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let stats = client.send(GetStats).await.map_err(|e| e.to_string())?;
    // Failure events travel store -> registry -> printer; wait (bounded) for all of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while printer.send(Printed).await.map_err(|e| e.to_string())? < stats.failed {
        if tokio::time::Instant::now() > deadline {
            return Err("failed-write events did not all arrive".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "published={} persisted={} failed={}",
        stats.published, stats.persisted, stats.failed
    );
    Ok(if stats.failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
