//! `actix-amps store`: check (`--verify`) or mend (`--repair`) a client's file publish store.
//! Exit 0 when intact (or repaired), 2 when `--verify` finds damage, 1 on any other error.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use actix_amps::client::store::{FileStore, StoreCheck};
use clap::Args;

/// Arguments of `store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The store's directory (no client may have it open).
    #[arg(long)]
    dir: PathBuf,
    /// Report every damaged range and exit 2 if there is any (the default).
    #[arg(long, conflicts_with = "repair")]
    verify: bool,
    /// Move damaged bytes to DIR/quarantine/, keep every intact record, print what was lost.
    #[arg(long)]
    repair: bool,
}

/// Runs the check or the repair and prints the report on stdout.
pub fn run(args: StoreArgs) -> Result<ExitCode, String> {
    let check = if args.repair {
        FileStore::repair(&args.dir)
    } else {
        FileStore::verify(&args.dir)
    }
    .map_err(|e| e.to_string())?;
    println!("{}", report(&args, &check));
    Ok(if !args.repair && !check.damage.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn report(args: &StoreArgs, c: &StoreCheck) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} segments, {} intact records, acknowledged up to sequence {}{}",
        args.dir.display(),
        c.segments,
        c.records,
        c.last_discarded,
        if c.torn_tail.is_some() {
            "; a torn tail (cut quietly on open)"
        } else {
            ""
        }
    );
    if c.damage.is_empty() {
        s.push_str("OK: no damage");
        return s;
    }
    let verb = if args.repair { "REPAIRED" } else { "DAMAGED" };
    let _ = writeln!(s, "{verb}: {} range(s)", c.damage.len());
    for d in &c.damage {
        let _ = write!(
            s,
            "- {} bytes {}..{} ({}); {} intact records before, {} after",
            d.path.display(),
            d.start,
            d.end,
            d.what,
            d.records_before,
            d.records_after
        );
        match d.lost {
            Some((a, b)) => {
                let _ = write!(s, "; unacknowledged messages lost: seq {a}..={b}");
            }
            None => s.push_str("; no unacknowledged message lost"),
        }
        if let Some((a, b)) = d.readable {
            let _ = write!(
                s,
                " (readable in the damaged bytes, unverified: seq {a}..={b})"
            );
        }
        s.push('\n');
    }
    for q in &c.quarantined {
        let _ = writeln!(s, "quarantined: {}", q.display());
    }
    s.trim_end().to_string()
}
