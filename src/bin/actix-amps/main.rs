//! `actix-amps`: the command-line front end. Results on stdout, logs and progress on stderr.
//!
//! One file per command; this file only parses arguments and dispatches.

mod connect;
mod incarnations;
mod journal;
mod last_error;
mod ping;
mod progress;
mod publish;
mod records;
mod serve;
mod sow;
mod sow_delete;
mod store;
mod sub_common;
mod subscribe;

use std::io::IsTerminal;
use std::process::ExitCode;

use actix_amps::protocol::mask_credentials;
use clap::{Parser, Subcommand};

/// An actix client for AMPS, and an embedded AMPS-protocol server.
#[derive(Parser, Debug)]
#[command(name = "actix-amps", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the embedded AMPS-protocol server until Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// Summarise what each client name persisted in a stopped server's data directory;
    /// `--verify` checks the log (exit 2 on damage).
    Journal(journal::JournalArgs),
    /// Publish one message per input record (stdin lines, or --file with --delimiter); print
    /// failed writes as JSON lines (exit 2 if any).
    Publish(publish::PublishArgs),
    /// Delete SOW records by filter, keys or data and print the server's stats.
    SowDelete(sow_delete::SowDeleteArgs),
    /// Subscribe; print each delivered message as one JSON line.
    Subscribe(subscribe::SubscribeArgs),
    /// Query the SOW; print each record as one JSON line (exit 0 when the query completes).
    Sow(sow::SowArgs),
    /// Query the SOW, then subscribe: SOW records (command "sow"), then live messages.
    SowAndSubscribe(subscribe::SowAndSubscribeArgs),
    /// Log on and print the server's version and a round-trip time.
    Ping(ping::PingArgs),
    /// Check (`--verify`, exit 2 on damage) or repair (`--repair`) a client's file store.
    Store(store::StoreArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            // clap's message up to its usage block, on one line.
            let head = text.split("\n\n").next().unwrap_or("invalid arguments");
            let line: Vec<&str> = head
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let line = line.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            // clap echoes arguments it did not expect: a URI's password among them.
            let line = mask_credentials(line);
            eprintln!("actix-amps: error: {line} (see --help)");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Cmd::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Cmd::Journal(args) => journal::run(args),
        Cmd::Publish(args) => publish::run(args),
        Cmd::SowDelete(args) => sow_delete::run(args),
        Cmd::Subscribe(args) => subscribe::run(args),
        Cmd::Sow(args) => sow::run(args),
        Cmd::SowAndSubscribe(args) => subscribe::run_sow_and_subscribe(args),
        Cmd::Ping(args) => ping::run(args),
        Cmd::Store(args) => store::run(args),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            // The commands' errors hold no password; masking is the last line of defence.
            eprintln!("actix-amps: error: {}", mask_credentials(&msg));
            ExitCode::FAILURE
        }
    }
}

/// Installs the stderr log subscriber (RUST_LOG honoured, `info` by default).
fn init_logging() {
    install_logging("info");
}

/// Logging for the client commands: warnings and the periodic progress line (`progress.rs`)
/// only, unless RUST_LOG says otherwise, so stdout and stderr stay readable in scripts.
fn init_logging_quiet() {
    install_logging("warn,progress=info");
}

fn install_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .try_init();
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything but the empty
/// string (<https://no-color.org>): logs redirected to a file carry no escape codes.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
