//! `actix-amps publish`: one message per input record (a stdin line by default), failed writes
//! as JSON lines on stdout.
//!
//! Input: stdin, or `--file PATH`; records end at `--delimiter` (a newline by default) and are
//! published **as bytes**, UTF-8 or not (`records.rs` says exactly what is cut). Every record
//! gets the same `--correlation-id`, `--sow-key` and `--expiration` when given, and goes as a
//! `delta_publish` with `--delta`; `--rate N` publishes at most N records a second. Before
//! reading anything the command logs on (`connect.rs`): a refused password or an unreachable
//! server ends it within `--connect-timeout` with the reason, before any input is consumed.
//! Progress goes to stderr on long runs (`progress.rs`).
//!
//! Records are **streamed**: each is stored and sent as soon as it is read; only records already
//! buffered when one is read go with it in one batch (at most `--batch`). At the end of input,
//! or on SIGINT / SIGTERM (reading stops at once), the command flushes within
//! `--flush-timeout`, prints every failed write as one JSON line on stdout, then on stderr the
//! summary `published=N persisted=P failed=F predecessor_failed=K seconds=S per_second=R`, and
//! exits with:
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
//! same client name (printed with `"predecessor":true`). A failed write's `data` is its body as
//! text; a body that is not UTF-8 also comes exactly as `data_base64`. A clean exit proves to the server that
//! every failure was read, so the next run with this client name does not print them again.

use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    ClientConfig, ConnectionEvent, FailedWrite, FailureSource, GetStats, LocalReason, Publish,
    PublishBatch, PublishFlush, ReconnectPolicy, Shutdown, StoreKind, SubscribeConnectionEvents,
    SubscribeFailedWrites,
};
use actix_amps::error::PublishError;
use bytes::Bytes;
use clap::Args;
use futures_util::FutureExt;
use tokio::io::AsyncRead;

use crate::connect::ConnectArgs;
use crate::progress::{Mode, Reporter, Sample};
use crate::records::{parse_delimiter, Records};
use crate::sub_common::parse_secs;

/// The longest record (the client's default largest frame, less room for the header).
const MAX_RECORD: usize = 64 * 1024 * 1024 - 64 * 1024;

/// Arguments of `publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    conn: ConnectArgs,
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
    /// Read the records from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// What ends a record: one character, \n, \t, \r, \0, 0xNN or a byte value (10).
    #[arg(long, value_parser = parse_delimiter, default_value = "\\n", value_name = "D")]
    delimiter: u8,
    /// Publish at most this many records per second (fractions allowed).
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Send each record as a delta_publish (the server merges it into the SOW record).
    #[arg(long)]
    delta: bool,
    /// Correlation id (`x`) on every record: base64 characters.
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// SOW key (`k`) on every record, instead of the server deriving it from the body.
    #[arg(long, value_name = "KEY")]
    sow_key: Option<String>,
    /// Expiration (`e`) of every record, in seconds.
    #[arg(long, value_name = "SECS")]
    expiration: Option<u64>,
    /// Fail at logon when the server has fewer of this client name's writes than the store
    /// already saw acknowledged (messages lost server-side, e.g. a failover to a replica that
    /// was behind), instead of going on.
    #[arg(long)]
    error_on_publish_gap: bool,
    /// Print `stored FIRST LAST` on stderr each time a batch of lines is in the store (with a
    /// file store: on disk), for scripts and crash tests that must know what was accepted.
    #[arg(long)]
    report_stored: bool,
    /// Most lines per batch (one actor message each); a batch holds only lines already
    /// buffered when the first of them is read, so no line waits for others.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Progress on stderr: a bar on a terminal, else a log line this often (0: none).
    #[arg(long, value_parser = parse_secs, default_value = "5", value_name = "SECS")]
    progress_interval: Duration,
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

/// A correlation id the server would carry: the base64 character set.
fn check_correlation_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(format!(
            "--correlation-id {id:?}: use base64 characters (A-Z a-z 0-9 + / =)"
        ));
    }
    Ok(())
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
            "data_base64": m.and_then(|m| crate::sub_common::base64_unless_utf8(&m.data)),
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
    if let Some(id) = &args.correlation_id {
        check_correlation_id(id)?;
    }
    let rate = match args.rate {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            return Err(format!(
                "--rate {r}: give a positive number of records per second"
            ))
        }
        r => r,
    };
    if args.topic.is_empty() {
        return Err("--topic must not be empty".into());
    }
    let timeout = Duration::from_millis(args.flush_timeout);
    let config = args
        .conn
        .config(&args.client_name)?
        .store(store)
        .error_on_publish_gap(args.error_on_publish_gap)
        // Without a server, give up when the flush would time out anyway.
        .reconnect(ReconnectPolicy::new().max_retry_time(Some(timeout)));
    let opts = Options {
        topic: args.topic,
        timeout,
        connect_deadline: args.conn.connect_timeout.min(timeout),
        report_stored: args.report_stored,
        batch: args.batch.max(1),
        file: args.file,
        delimiter: args.delimiter,
        rate,
        delta: args.delta,
        correlation_id: args.correlation_id,
        sow_key: args.sow_key,
        expiration: args.expiration,
        progress: Mode::detect(args.progress_interval),
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
    connect_deadline: Duration,
    report_stored: bool,
    batch: usize,
    file: Option<PathBuf>,
    delimiter: u8,
    rate: Option<f64>,
    delta: bool,
    correlation_id: Option<String>,
    sow_key: Option<String>,
    expiration: Option<u64>,
    progress: Mode,
}

impl Options {
    /// One record as a publish with the command's options.
    fn message(&self, data: Bytes) -> Publish {
        let mut p = Publish::new(self.topic.clone(), data);
        if let Some(id) = &self.correlation_id {
            p = p.correlation_id(id.clone());
        }
        if let Some(k) = &self.sow_key {
            p = p.sow_key(k.clone());
        }
        if let Some(e) = self.expiration {
            p = p.expiration(e);
        }
        p
    }
}

/// At most `rate` records a second: record `n` (from 0) goes no earlier than `n / rate`
/// seconds after the start.
struct Pace {
    rate: f64,
    start: tokio::time::Instant,
    sent: u64,
}

impl Pace {
    /// When the next record may go.
    fn next_at(&self) -> tokio::time::Instant {
        self.start + Duration::from_secs_f64(self.sent as f64 / self.rate)
    }

    /// How many records may go now (at least one once `next_at` has passed).
    fn allowed(&self, now: tokio::time::Instant) -> usize {
        let due = ((now - self.start).as_secs_f64() * self.rate).floor() as u64 + 1;
        due.saturating_sub(self.sent).min(usize::MAX as u64) as usize
    }
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

/// How reading the input ended.
enum End {
    Eof,
    Interrupted(&'static str),
    /// A batch was refused: not stored, not sent.
    Refused {
        error: PublishError,
        lines: usize,
    },
    /// The input could not be read (an I/O error, a record over the limit).
    Input(String),
}

/// Starts the client and publishes; a failure says why the connection failed, if it did.
async fn publish(config: ClientConfig, opts: Options) -> Result<ExitCode, String> {
    let mut signals = Signals::new()?;
    let (input, size): (Box<dyn AsyncRead + Unpin>, Option<u64>) = match &opts.file {
        Some(path) => {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("--file {}: {e}", path.display()))?;
            let size = f
                .metadata()
                .await
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            (Box::new(f), size)
        }
        None => (Box::new(tokio::io::stdin()), None),
    };
    let records = Records::new(input, opts.delimiter, MAX_RECORD);
    let client = config.start().map_err(|e| e.to_string())?;
    let watch = crate::last_error::watch(&client).await?;
    // Nothing is read before the logon: a configuration error consumes no input, and a
    // client without a store (whose writes before a logon would be refused) starts logged on.
    crate::connect::logged_on(&client, opts.connect_deadline).await?;
    match publish_records(&client, records, size, &mut signals, opts).await {
        Err(e) => Err(crate::last_error::explain(&watch, e).await),
        ok => ok,
    }
}

async fn publish_records(
    client: &Addr<actix_amps::client::ClientActor>,
    mut records: Records<Box<dyn AsyncRead + Unpin>>,
    size: Option<u64>,
    signals: &mut Signals,
    opts: Options,
) -> Result<ExitCode, String> {
    let started = std::time::Instant::now();
    let timeout = opts.timeout;
    let batch_size = opts.batch;
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
    let bytes_read = Rc::new(Cell::new(0u64));
    let reporter = {
        let client = client.clone();
        let bytes_read = bytes_read.clone();
        Reporter::start(opts.progress, "publish", move || {
            let stats = client.send(GetStats);
            let read = bytes_read.get();
            async move {
                let s = stats.await.ok()?.ok()?;
                Some(Sample {
                    done: s.published,
                    persisted: Some(s.persisted),
                    unacknowledged: Some(s.unacknowledged),
                    failed: Some(s.failed + s.predecessor_failed),
                    fraction: size.filter(|&n| n > 0).map(|n| read as f64 / n as f64),
                })
            }
        })
    };
    let mut pace = opts.rate.map(|rate| Pace {
        rate,
        start: tokio::time::Instant::now(),
        sent: 0,
    });
    let mut read: u64 = 0;
    let end = loop {
        let mut room = batch_size;
        if let Some(p) = &pace {
            let at = p.next_at();
            tokio::select! {
                biased;
                sig = signals.recv() => break End::Interrupted(sig),
                () = tokio::time::sleep_until(at) => {}
            }
            room = room.min(p.allowed(tokio::time::Instant::now()).max(1));
        }
        // `Records::next` is cancel safe: an interrupt loses no record that was read.
        let first = tokio::select! {
            biased;
            sig = signals.recv() => break End::Interrupted(sig),
            rec = records.next() => rec,
        };
        let first = match first {
            Ok(Some(r)) => r,
            Ok(None) => break End::Eof,
            Err(e) => break End::Input(e),
        };
        let mut batch = vec![opts.message(first)];
        let mut eof = false;
        let mut input_error = None;
        // Only what is already buffered joins this batch.
        while batch.len() < room {
            match records.next().now_or_never() {
                Some(Ok(Some(r))) => batch.push(opts.message(r)),
                Some(Ok(None)) => {
                    eof = true;
                    break;
                }
                Some(Err(e)) => {
                    input_error = Some(e);
                    break;
                }
                None => break,
            }
        }
        bytes_read.set(records.bytes);
        let n = batch.len();
        read += n as u64;
        if let Some(p) = &mut pace {
            p.sent += n as u64;
        }
        let mut request = PublishBatch::new(batch);
        request.delta = opts.delta;
        let stored = client.send(request).await.map_err(|e| e.to_string())?;
        match stored {
            Ok(range) => {
                if let (true, Some((first, last))) = (opts.report_stored, range) {
                    eprintln!("stored {first} {last}");
                }
            }
            Err(error) => break End::Refused { error, lines: n },
        }
        if let Some(e) = input_error {
            break End::Input(e);
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
    if let Some(r) = reporter {
        r.stop();
    }
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
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "published={} persisted={} failed={failed} predecessor_failed={predecessor_failed} \
         seconds={seconds:.3} per_second={}",
        stats.published,
        stats.persisted,
        (stats.published as f64 / seconds.max(1e-3)).round() as u64
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
        (End::Input(e), _) => Err(format!(
            "{e}; the {read} record(s) before it were published (see the summary) and reading \
             stopped"
        )),
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
