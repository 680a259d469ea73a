//! `actix-amps sow-delete`: delete SOW records by filter, keys or data and print the stats.
//!
//! It logs on first (`connect.rs`): refused credentials end it at once with the server's
//! reason, an unreachable server within `--connect-timeout`.

use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::{PublishFlush, ReconnectPolicy, SowDeleteAndWait, SowDeleteSelector};
use clap::{ArgGroup, Args};

/// Arguments of `sow-delete`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("selector").required(true).args(["filter", "keys", "data"])))]
pub struct SowDeleteArgs {
    #[command(flatten)]
    conn: crate::connect::ConnectArgs,
    /// SOW topic.
    #[arg(long)]
    topic: String,
    /// Delete records matching this content filter, e.g. "/id = 1".
    #[arg(long)]
    filter: Option<String>,
    /// Delete records with these SOW keys (comma list).
    #[arg(long)]
    keys: Option<String>,
    /// Delete the record this JSON body would update.
    #[arg(long)]
    data: Option<String>,
    /// Client name.
    #[arg(long, default_value = "actix-amps-sow-delete")]
    client_name: String,
    /// Deadline in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout: u64,
}

/// Runs the command: prints `{"matches":..,"records_deleted":..,"topic_matches":..}`.
pub fn run(args: SowDeleteArgs) -> Result<ExitCode, String> {
    crate::init_logging_quiet();
    let selector = match (args.filter, args.keys, args.data) {
        (Some(f), None, None) => SowDeleteSelector::Filter(f),
        (None, Some(k), None) => SowDeleteSelector::Keys(k),
        (None, None, Some(d)) => SowDeleteSelector::Data(d.into()),
        _ => return Err("give exactly one of --filter, --keys, --data".into()),
    };
    let timeout = Duration::from_millis(args.timeout);
    let connect = args.conn.connect_timeout.min(timeout);
    let config = args
        .conn
        .config(&args.client_name)?
        .reconnect(ReconnectPolicy::new().max_retry_time(Some(timeout)));
    let topic = args.topic;
    System::new().block_on(async move {
        let client = config.start().map_err(|e| e.to_string())?;
        let watch = crate::last_error::watch(&client).await?;
        // A refused password or an unreachable server ends the command here, at once or
        // within the connect deadline, instead of as a timeout waiting for the stats.
        crate::connect::logged_on(&client, connect).await?;
        match delete(&client, topic, selector, timeout).await {
            Err(e) => Err(crate::last_error::explain(&watch, e).await),
            ok => ok,
        }
    })
}

/// Deletes and prints the stats.
async fn delete(
    client: &Addr<actix_amps::client::ClientActor>,
    topic: String,
    selector: SowDeleteSelector,
    timeout: Duration,
) -> Result<ExitCode, String> {
    let stats = client
        .send(SowDeleteAndWait::new(topic, selector, timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    client
        .send(PublishFlush { timeout })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::json!({
            "matches": stats.matches,
            "records_deleted": stats.records_deleted,
            "topic_matches": stats.topic_matches,
        })
    );
    Ok(ExitCode::SUCCESS)
}
