//! `actix-amps sow`: run a SOW query and print each record as one JSON line (`sow_key`,
//! `data`).
//!
//! Exit status: 0 when the query completes (the server's `completed` ack); 1 on a failure ack
//! (its reason, e.g. `invalid order by`) or when it has not completed by `--timeout`.

use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::SowQuery;
use clap::Args;
use tokio::sync::mpsc;

use crate::sub_common::{
    parse_secs, start_logged_on, wait_for_end, with_last_error, Printer, Style,
};

/// Arguments of `sow`.
#[derive(Args, Debug)]
pub struct SowArgs {
    #[command(flatten)]
    conn: crate::connect::ConnectArgs,
    /// SOW topic (or topic regex).
    #[arg(long)]
    topic: String,
    /// Content filter, e.g. "/qty > 10".
    #[arg(long)]
    filter: Option<String>,
    /// At most this many records.
    #[arg(long)]
    top_n: Option<u64>,
    /// Order by these fields, e.g. "/id DESC".
    #[arg(long)]
    order_by: Option<String>,
    /// Records per batch frame (the official client sends 10).
    #[arg(long, default_value_t = 10)]
    batch_size: u64,
    /// Fail unless the query completes within this many seconds.
    #[arg(long, value_parser = parse_secs, default_value = "30")]
    timeout: Duration,
    /// Client name (default: actix-amps-sow-<pid>).
    #[arg(long)]
    client_name: Option<String>,
}

/// Runs the command.
pub fn run(args: SowArgs) -> Result<ExitCode, String> {
    crate::init_logging_quiet();
    System::new().block_on(async move {
        let deadline = tokio::time::Instant::now() + args.timeout;
        let (client, errors) = start_logged_on(
            "sow",
            args.client_name.clone(),
            &args.conn,
            args.conn.connect_timeout.min(args.timeout),
        )
        .await?;
        let (tx, mut notes) = mpsc::unbounded_channel();
        let printer = Printer::new(client.clone(), Style::Record, None, false, tx).start();
        let mut q = SowQuery::new(args.topic, printer.recipient())
            .batch_size(args.batch_size)
            .timeout(args.timeout);
        if let Some(f) = args.filter {
            q = q.filter(f);
        }
        if let Some(n) = args.top_n {
            q = q.top_n(n);
        }
        if let Some(o) = args.order_by {
            q = q.order_by(o);
        }
        client
            .send(q)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| with_last_error(e.to_string(), &errors))?;
        wait_for_end(&mut notes, Some(deadline), true)
            .await
            .map_err(|e| {
                if e == "timed out" {
                    format!("the query did not complete within {:?}", args.timeout)
                } else {
                    e
                }
            })?;
        Ok(ExitCode::SUCCESS)
    })
}
