//! `actix-amps subscribe` and `actix-amps sow-and-subscribe`: print each delivered message as
//! one JSON line on stdout.
//!
//! Each line has the keys `command` (`p`, `delta_publish`, `oof`, or `sow` for the SOW records
//! of sow-and-subscribe), `topic` (null when the delivery carried none), `data`, `bookmark`,
//! `sow_key`, `sub_id` (the matching entry of the delivery's `sids`), `correlation_id` and
//! `reason` (for oof; null otherwise). Progress (subscribed, disconnected, subscribed again)
//! goes to stderr.
//!
//! Exit status: 0 after `--count` lines or at `--timeout` (counted from the start); 1 with a
//! one-line error when the server refuses the subscription (its reason, e.g. `bad filter`),
//! when it is not established before the deadline, or when the server refuses it after a
//! reconnect.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{
    BookmarkStart, DiscardMode, FlowControl, SowAndSubscribe, Subscribe, SyncBookmarks,
};
use clap::Args;
use tokio::sync::mpsc;

use crate::progress::{Mode, Reporter, Sample};
use crate::sub_common::{
    client_config, default_name, parse_secs, wait_for_end, watch_errors, with_last_error, Printer,
    Style,
};

/// Lines printed per batch at most.
const PRINT_BATCH: usize = 256;

/// How long a subscribe may wait for its ack when no `--timeout` is given.
const DEFAULT_SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// Arguments of `subscribe` (and the subscription part of `sow-and-subscribe`).
#[derive(Args, Debug)]
pub struct SubscribeArgs {
    #[command(flatten)]
    conn: crate::connect::ConnectArgs,
    /// Topic (or topic regex) to subscribe to.
    #[arg(long)]
    topic: String,
    /// Content filter, e.g. "/qty > 10".
    #[arg(long)]
    filter: Option<String>,
    /// Delta subscription: updates carry the key fields and the changed fields only.
    #[arg(long)]
    delta: bool,
    /// Start from a bookmark: epoch (sent as 0), now (sent as 0|1|), recent (where this sub
    /// id's last run got to, from --bookmark-store; epoch when unknown), or a literal
    /// bookmark, list of bookmarks or timestamp.
    #[arg(long)]
    bookmark: Option<String>,
    /// Subscription id (default: the subscribe command's id).
    #[arg(long)]
    sub_id: Option<String>,
    /// Client name (default: actix-amps-subscribe-<pid>).
    #[arg(long)]
    client_name: Option<String>,
    /// Exit 0 after this many lines.
    #[arg(long)]
    count: Option<u64>,
    /// Exit 0 this many seconds after the start (fractions allowed).
    #[arg(long, value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Keep what was printed in this file, so a later run with --bookmark recent and the
    /// same --sub-id continues after it.
    #[arg(long, value_name = "FILE")]
    bookmark_store: Option<PathBuf>,
    /// Extra subscribe option (comma lists allowed), e.g. --option replace; repeatable.
    #[arg(long = "option", value_name = "O")]
    options: Vec<String>,
    /// Progress on stderr: a bar on a terminal, else a log line this often (0: none).
    #[arg(long, value_parser = parse_secs, default_value = "5", value_name = "SECS")]
    progress_interval: Duration,
}

/// Arguments of `sow-and-subscribe`.
#[derive(Args, Debug)]
pub struct SowAndSubscribeArgs {
    #[command(flatten)]
    sub: SubscribeArgs,
    /// At most this many SOW records.
    #[arg(long)]
    top_n: Option<u64>,
    /// Order the SOW records by these fields, e.g. "/id DESC".
    #[arg(long)]
    order_by: Option<String>,
    /// SOW records per batch frame.
    #[arg(long, default_value_t = 10)]
    batch_size: u64,
    /// Out-of-focus notices (records that leave the filter, are deleted or expire).
    #[arg(long)]
    oof: bool,
}

/// The query part of `sow-and-subscribe`.
struct QueryPart {
    top_n: Option<u64>,
    order_by: Option<String>,
    batch_size: u64,
    oof: bool,
}

/// Runs `subscribe`.
pub fn run(args: SubscribeArgs) -> Result<ExitCode, String> {
    crate::init_logging_quiet();
    System::new().block_on(subscribe(args, None))
}

/// Runs `sow-and-subscribe`.
pub fn run_sow_and_subscribe(args: SowAndSubscribeArgs) -> Result<ExitCode, String> {
    crate::init_logging_quiet();
    let query = QueryPart {
        top_n: args.top_n,
        order_by: args.order_by,
        batch_size: args.batch_size,
        oof: args.oof,
    };
    System::new().block_on(subscribe(args.sub, Some(query)))
}

async fn subscribe(args: SubscribeArgs, query: Option<QueryPart>) -> Result<ExitCode, String> {
    let start = tokio::time::Instant::now();
    let deadline = args.timeout.map(|t| start + t);
    let name = args
        .client_name
        .clone()
        .unwrap_or_else(|| default_name("subscribe"));
    let config = client_config(&name, &args.conn, args.bookmark_store.as_deref())?
        .heartbeat(Some(Duration::from_secs(10)));
    let client = config.start().map_err(|e| e.to_string())?;
    let errors = watch_errors(&client).await;
    let connect = match deadline {
        Some(d) => args.conn.connect_timeout.min(d - start),
        None => args.conn.connect_timeout,
    };
    crate::connect::logged_on(&client, connect).await?;
    let bookmark = args.bookmark.as_deref().map(BookmarkStart::parse);
    let (tx, mut notes) = mpsc::unbounded_channel();
    let printer = Printer::new(
        client.clone(),
        Style::Subscription,
        args.count,
        bookmark.is_some(),
        tx,
    );
    let printed = printer.printed.clone();
    let printer = printer.start();
    let wait = args.timeout.unwrap_or(DEFAULT_SUBSCRIBE_WAIT);
    let discard = DiscardMode::Explicit {
        max_outstanding: 100_000,
    };
    // Small batches: each is printed, then recorded as processed, so a killed run repeats
    // at most one batch's lines.
    let flow = FlowControl::default().max_batch(PRINT_BATCH);
    let placed = match query {
        None => {
            let mut m = Subscribe::new(args.topic.clone(), printer.recipient())
                .timeout(wait)
                .flow(flow);
            if let Some(f) = args.filter {
                m = m.filter(f);
            }
            if let Some(s) = args.sub_id {
                m = m.sub_id(s);
            }
            if let Some(b) = bookmark {
                m = m.bookmark(b).discard(discard);
            }
            if args.delta {
                m = m.delta();
            }
            for o in args.options {
                m = m.option(o);
            }
            client.send(m).await
        }
        Some(q) => {
            let mut m = SowAndSubscribe::new(args.topic.clone(), printer.recipient())
                .timeout(wait)
                .flow(flow)
                .batch_size(q.batch_size);
            if let Some(f) = args.filter {
                m = m.filter(f);
            }
            if let Some(s) = args.sub_id {
                m = m.sub_id(s);
            }
            if let Some(b) = bookmark {
                m = m.bookmark(b).discard(discard);
            }
            if args.delta {
                m = m.delta();
            }
            if q.oof {
                m = m.oof();
            }
            if let Some(n) = q.top_n {
                m = m.top_n(n);
            }
            if let Some(o) = q.order_by {
                m = m.order_by(o);
            }
            for o in args.options {
                m = m.option(o);
            }
            client.send(m).await
        }
    };
    let sub_id = placed
        .map_err(|e| e.to_string())?
        .map_err(|e| with_last_error(e.to_string(), &errors))?;
    eprintln!("actix-amps: subscribed {sub_id}");
    let reporter = Reporter::start(
        Mode::detect(args.progress_interval),
        "subscribe",
        move || {
            let done = printed.load(std::sync::atomic::Ordering::Relaxed);
            async move {
                Some(Sample {
                    done,
                    ..Sample::default()
                })
            }
        },
    );
    let outcome = wait_for_end(&mut notes, deadline, false).await;
    if let Some(r) = reporter {
        r.stop();
    }
    // What was printed is recorded before the process ends.
    let _ = client
        .send(SyncBookmarks::new(Duration::from_secs(5)))
        .await;
    outcome.map(|()| ExitCode::SUCCESS)
}
