//! `actix-amps ping`: log on, then print the server's version and a round trip as one JSON
//! line: `{"server":URI,"server_version":V,"round_trip_us":N}`.
//!
//! The round trip is a `flush` asking for `processed`, which a server answers at once when
//! nothing of this connection waits to be persisted. Exit status: 0, or 1 when the logon or
//! the round trip does not happen within `--timeout`.

use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_amps::client::Ping;
use clap::Args;

use crate::sub_common::{parse_secs, start_logged_on, with_last_error};

/// Arguments of `ping`.
#[derive(Args, Debug)]
pub struct PingArgs {
    #[command(flatten)]
    conn: crate::connect::ConnectArgs,
    /// Give up after this many seconds.
    #[arg(long, value_parser = parse_secs, default_value = "10")]
    timeout: Duration,
    /// Client name (default: actix-amps-ping-<pid>).
    #[arg(long)]
    client_name: Option<String>,
}

/// Runs the command.
pub fn run(args: PingArgs) -> Result<ExitCode, String> {
    crate::init_logging_quiet();
    System::new().block_on(async move {
        let deadline = tokio::time::Instant::now() + args.timeout;
        let (client, errors) = start_logged_on(
            "ping",
            args.client_name.clone(),
            &args.conn,
            args.conn.connect_timeout.min(args.timeout),
        )
        .await?;
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(1));
        let reply = client
            .send(Ping::new(left))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| with_last_error(e.to_string(), &errors))?;
        let line = serde_json::json!({
            "server": reply.server,
            "server_version": reply.server_version,
            "round_trip_us": reply.round_trip.as_micros() as u64,
        });
        println!("{line}");
        Ok(ExitCode::SUCCESS)
    })
}
