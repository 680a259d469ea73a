//! `actix-amps publish`: one message per stdin line, failed writes as JSON lines on stdout.
//!
//! Lines are **streamed**: each is stored and sent as soon as it is read; only lines already
//! buffered when one is read go with it in one batch (at most `--batch`). At the end of input,
//! or on SIGINT / SIGTERM (reading stops at once), the command flushes within
//! `--flush-timeout`, prints every failed write as one JSON line on stdout, then on stderr the
//! summary `published=N persisted=P failed=F predecessor_failed=K`, and exits with:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every line read was persisted |
//! | 2 | some writes failed (each one is on stdout; `failed` counts exactly those lines) |
//! | 1 | an error: bad arguments, no server or no flush within the timeout, a write the store refused, the client name taken over by another publisher |
//! | 130 | interrupted (SIGINT or SIGTERM), and the flush of everything read before it was clean with no failure |
//!
//! An error wins over failures, and failures over an interrupt. `failed` counts this run's
//! writes; `predecessor_failed` the failures the server still owed an earlier process with the
//! same client name (printed with `"predecessor":true`). A clean exit proves to the server that
//! every failure was read, so the next run with this client name does not print them again.

use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientConfig, ConnectionEvent, FailedWrite, FailureSource, GetStats, LocalReason, Publish,
    PublishBatch, PublishFlush, ReconnectPolicy, Shutdown, StoreKind, SubscribeConnectionEvents,
    SubscribeFailedWrites, WaitLoggedOn,
};
use actix_amps::error::PublishError;
use actix_amps::protocol::{parse_uri, redact_uri};
use actix_amps::tls::TlsClientConfig;
use clap::Args;
use futures_util::FutureExt;
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
    /// Most lines per batch (one actor message each); a batch holds only lines already
    /// buffered when the first of them is read, so no line waits for others.
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

/// Prints each failed write as one JSON line, counts them, and notes a lost client name.
#[derive(Default)]
struct Printer {
    own: u64,
    predecessors: u64,
    name_lost: bool,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<FailedWrite> for Printer {
    type Result = ();

    fn handle(&mut self, f: FailedWrite, _: &mut Context<Self>) {
        let m = f.message.as_ref();
        let local = match &f.source {
            FailureSource::Local(LocalReason::NameInUse) => Some("name in use"),
            FailureSource::Local(LocalReason::SequenceConflict { .. }) => Some("sequence conflict"),
            FailureSource::Local(_) => Some("rejected"),
            _ => None,
        };
        let line = serde_json::json!({
            "sequence": f.sequence,
            "reason": f.reason.as_str(),
            "operation": m.map(|m| m.operation.as_str()),
            "topic": m.map(|m| &*m.topic),
            "data": m.map(|m| String::from_utf8_lossy(&m.data).into_owned()),
            "correlation_id": m.and_then(|m| m.opts().correlation_id.clone()),
            "predecessor": f.predecessor,
            "local": local,
        });
        println!("{line}");
        if f.predecessor {
            self.predecessors += 1;
        } else {
            self.own += 1;
        }
    }
}

impl Handler<ConnectionEvent> for Printer {
    type Result = ();

    fn handle(&mut self, e: ConnectionEvent, _: &mut Context<Self>) {
        if let ConnectionEvent::NameInUse { client_name } = e {
            eprintln!("actix-amps: client name {client_name:?} taken over by another connection; stopping");
            self.name_lost = true;
        }
    }
}

/// What the printer has seen: failures printed (this run's, predecessors'), name lost.
#[derive(Message)]
#[rtype(result = "(u64, u64, bool)")]
struct Printed;

impl Handler<Printed> for Printer {
    type Result = MessageResult<Printed>;

    fn handle(&mut self, _: Printed, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.own, self.predecessors, self.name_lost))
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
        .reconnect(ReconnectPolicy::new().max_retry_time(Some(timeout)));
    let opts = Options {
        topic: args.topic,
        timeout,
        report_stored: args.report_stored,
        batch: args.batch.max(1),
    };
    let system = System::new();
    let result = system.block_on(publish(config, opts));
    // tokio reads stdin on a blocking thread whose read cannot be cancelled: dropping the
    // runtime would wait for it, that is, after an interrupt, for more input. Everything is
    // flushed and the store synced by now (the client's Shutdown), so exit without it.
    std::mem::forget(system);
    result
}

struct Options {
    topic: String,
    timeout: Duration,
    report_stored: bool,
    batch: usize,
}

/// SIGINT and SIGTERM, as one stream.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let err = |e: std::io::Error| format!("signal handling: {e}");
            Ok(Signals {
                int: signal(SignalKind::interrupt()).map_err(err)?,
                term: signal(SignalKind::terminate()).map_err(err)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// How reading stdin ended.
enum End {
    Eof,
    Interrupted(&'static str),
    /// A batch was refused: not stored, not sent.
    Refused {
        error: PublishError,
        lines: usize,
    },
}

/// Starts the client and publishes; a failure says why the connection failed, if it did.
async fn publish(config: ClientConfig, opts: Options) -> Result<ExitCode, String> {
    let storeless = config.store == StoreKind::None;
    let mut signals = Signals::new()?;
    let client = config.start().map_err(|e| e.to_string())?;
    let watch = crate::last_error::watch(&client).await?;
    match publish_lines(&client, storeless, &mut signals, opts).await {
        Err(e) => Err(crate::last_error::explain(&watch, e).await),
        ok => ok,
    }
}

async fn publish_lines(
    client: &Addr<actix_amps::client::ClientActor>,
    storeless: bool,
    signals: &mut Signals,
    opts: Options,
) -> Result<ExitCode, String> {
    let Options {
        topic,
        timeout,
        report_stored,
        batch: batch_size,
    } = opts;
    let printer = Printer::default().start();
    client
        .send(SubscribeFailedWrites(printer.clone().recipient()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    client
        .send(SubscribeConnectionEvents(printer.clone().recipient()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // Without a store a write made before the logon would be refused, not kept: wait for it.
    if storeless
        && !client
            .send(WaitLoggedOn::new(timeout))
            .await
            .map_err(|e| e.to_string())?
    {
        return Err(format!("not logged on within {} ms", timeout.as_millis()));
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut read: u64 = 0;
    let end = loop {
        // `next_line` is cancel safe: an interrupt loses no line that was read.
        let first = tokio::select! {
            biased;
            sig = signals.recv() => break End::Interrupted(sig),
            line = lines.next_line() => line.map_err(|e| format!("reading stdin: {e}"))?,
        };
        let Some(first) = first else { break End::Eof };
        let mut batch = vec![Publish::new(topic.clone(), first)];
        let mut eof = false;
        // Only what is already buffered joins this batch.
        while batch.len() < batch_size {
            match lines.next_line().now_or_never() {
                Some(Ok(Some(line))) => batch.push(Publish::new(topic.clone(), line)),
                Some(Ok(None)) => {
                    eof = true;
                    break;
                }
                Some(Err(e)) => return Err(format!("reading stdin: {e}")),
                None => break,
            }
        }
        let n = batch.len();
        read += n as u64;
        let stored = client
            .send(PublishBatch::new(batch))
            .await
            .map_err(|e| e.to_string())?;
        match stored {
            Ok(range) => {
                if let (true, Some((first, last))) = (report_stored, range) {
                    eprintln!("stored {first} {last}");
                }
            }
            Err(error) => break End::Refused { error, lines: n },
        }
        if eof {
            break End::Eof;
        }
    };
    let flushed = client
        .send(PublishFlush { timeout })
        .await
        .map_err(|e| e.to_string())?;
    // The flush resolved after every failure before it was in the printer's mailbox: this
    // answer counts all of them.
    let (failed, predecessor_failed, name_lost) =
        printer.send(Printed).await.map_err(|e| e.to_string())?;
    let stats = client
        .send(GetStats)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if flushed.is_ok() {
        // Proves to the server that the failures were read (bounded), so the next run with
        // this client name is not told them again.
        let _ = client.send(Shutdown).await;
    }
    eprintln!(
        "published={} persisted={} failed={failed} predecessor_failed={predecessor_failed}",
        stats.published, stats.persisted
    );
    if let Ok(report) = &flushed {
        if report.failed != failed + predecessor_failed {
            tracing::warn!(
                reported = report.failed,
                printed = failed + predecessor_failed,
                "the flush report and the printed failures differ"
            );
        }
    }
    let any_failed = failed + predecessor_failed > 0;
    match (end, flushed) {
        (End::Refused { error, lines }, _) => {
            let unsent = lines as u64;
            Err(format!(
                "{error}; {unsent} line(s) of the {read} read were not stored and never sent, \
                 and reading stopped"
            ))
        }
        (_, Err(e)) => Err(e.to_string()),
        (_, Ok(_)) if name_lost => Err(format!(
            "the client name was taken over by another connection after {read} line(s); \
             every write not persisted is printed above"
        )),
        (_, Ok(_)) if any_failed => Ok(ExitCode::from(2)),
        (End::Interrupted(sig), Ok(_)) => {
            eprintln!(
                "actix-amps: interrupted by {sig} after {read} line(s); all of them persisted"
            );
            Ok(ExitCode::from(130))
        }
        (End::Eof, Ok(_)) => Ok(ExitCode::SUCCESS),
    }
}
