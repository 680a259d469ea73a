//! `actix-amps journal`: what each client name persisted in a stopped server's data directory
//! (and which writes were refused, with the failures no connection has read yet), and with
//! `--verify` whether the log is intact (exit 2 and every damaged range if not).
//!
//! Sequences are grouped by publisher incarnation (`incarnations.rs`): a client name run by
//! several processes without a durable store numbers each run from the clock, and the
//! distance between two runs is a restart, not a loss. `missing` lists only the sequences
//! missing inside an incarnation (neither persisted nor refused), and `incarnations` each
//! run's first and last sequence, count and gaps.

use std::fmt::Write as _;
use std::path::PathBuf;

use std::process::ExitCode;

use actix_amps::server::txlog::{ClientRange, LossReport};
use actix_amps::server::Journal;
use clap::Args;

use crate::incarnations::{self, Incarnation};

/// Arguments of `journal`.
#[derive(Args, Debug)]
pub struct JournalArgs {
    /// The server's data directory (the server must not be running on it).
    #[arg(long = "data")]
    data: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Check the whole log: report every damaged range (file, offsets, LSNs lost, records
    /// before and after, what was readable) and exit 2 if there is any.
    #[arg(long)]
    verify: bool,
}

/// Reads the journal and prints it on stdout. Exit 0, or 2 with `--verify` on damage.
pub fn run(args: JournalArgs) -> Result<ExitCode, String> {
    let journal = Journal::read(&args.data).map_err(|e| e.to_string())?;
    let out = match (args.json, args.verify) {
        (true, _) => to_json(&journal),
        (false, false) => to_text(&journal),
        (false, true) => verify_text(&args.data, &journal),
    };
    println!("{out}");
    if args.verify && !journal.is_intact() {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_text(dir: &std::path::Path, j: &Journal) -> String {
    let mut s = String::new();
    let (first, last) = j.lsn_range();
    let _ = writeln!(
        s,
        "{}: {} segments, {} intact records (LSN {first}..={last}){}",
        dir.display(),
        j.segments(),
        j.records(),
        if j.torn_tail() {
            "; a torn tail (cut quietly on start)"
        } else {
            ""
        }
    );
    if first > 1 {
        let _ = writeln!(
            s,
            "log retained from LSN {first} (older segments removed by retention; the snapshots hold their state)"
        );
    }
    for snap in j.snapshots() {
        if snap.is_intact() {
            let _ = writeln!(
                s,
                "snapshot {} (LSN {}): intact, {} entries",
                snap.path.display(),
                snap.lsn,
                snap.entries
            );
        } else {
            let what = snap.damage.first().map_or_else(
                || "incomplete: no end marker".to_owned(),
                |d| {
                    format!(
                        "bytes {}..{} ({}); {} intact entries before",
                        d.start, d.end, d.what, d.entries_before
                    )
                },
            );
            let _ = writeln!(
                s,
                "DAMAGED snapshot {} (LSN {}): {what}; {} intact entries of {} written",
                snap.path.display(),
                snap.lsn,
                snap.entries,
                snap.written
                    .map_or_else(|| "?".to_owned(), |w| w.to_string())
            );
        }
    }
    for (a, b, file) in j.repair_gaps() {
        let _ = writeln!(
            s,
            "earlier repair: LSNs {a}..={b} lost (damaged bytes in quarantine/{file})"
        );
    }
    if j.is_intact() {
        s.push_str("OK: no damage");
    } else if !j.damage().is_empty() {
        let _ = writeln!(s, "DAMAGED: {} range(s)", j.damage().len());
        for loss in j.damage() {
            s.push_str(&loss_text(loss));
        }
    }
    s.trim_end().to_string()
}

fn ranges_text(r: &[ClientRange]) -> String {
    r.iter()
        .map(|c| {
            let seqs = if c.first == c.last {
                c.first.to_string()
            } else {
                format!("{}..={}", c.first, c.last)
            };
            format!("{} seq {seqs} ({} records)", c.client, c.records)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One damaged range as lines of text (shared with `serve --repair`).
pub fn loss_text(loss: &LossReport) -> String {
    let d = &loss.range;
    let mut s = format!(
        "- {} bytes {}..{} ({}): ",
        d.path.display(),
        d.start,
        d.end,
        d.what
    );
    match loss.lost_lsns {
        Some((a, b)) => {
            let _ = write!(s, "LSNs {a}..={b} lost ({} records)", b - a + 1);
        }
        None => s.push_str("no record lost"),
    }
    let _ = writeln!(
        s,
        "; {} intact records before, {} after",
        loss.records_before, loss.records_after
    );
    if !loss.readable.is_empty() {
        let _ = writeln!(
            s,
            "    readable in the damaged bytes (unverified): {}",
            ranges_text(&loss.readable)
        );
    }
    if !loss.gaps.is_empty() {
        let _ = writeln!(
            s,
            "    sequences missing across the damage: {}",
            ranges_text(&loss.gaps)
        );
    }
    s
}

/// The gaps of all incarnations, in order.
fn real_gaps(incarnations: &[Incarnation]) -> Vec<(u64, u64)> {
    incarnations
        .iter()
        .flat_map(|i| i.missing.iter().copied())
        .collect()
}

fn to_json(j: &Journal) -> String {
    let clients: serde_json::Map<String, serde_json::Value> = j
        .clients()
        .map(|(name, c)| {
            let incarnations = incarnations::split(&c.sequences, &c.refused);
            let v = serde_json::json!({
                "count": c.count,
                "first": c.first,
                "last": c.last,
                "duplicates": c.duplicates,
                "missing": real_gaps(&incarnations).iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
                "incarnations": incarnations.iter().map(|i| serde_json::json!({
                    "first": i.first,
                    "last": i.last,
                    "count": i.count,
                    "missing": i.missing.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "refused": c.refused,
                "unread": c.unread,
            });
            (name.to_owned(), v)
        })
        .collect();
    let damage: Vec<serde_json::Value> = j
        .damage()
        .iter()
        .map(|l| {
            let r = |v: &[ClientRange]| {
                v.iter()
                    .map(|c| serde_json::json!({"client": c.client, "first": c.first, "last": c.last, "records": c.records}))
                    .collect::<Vec<_>>()
            };
            serde_json::json!({
                "file": l.range.path.display().to_string(),
                "start": l.range.start,
                "end": l.range.end,
                "what": l.range.what,
                "lost_lsns": l.lost_lsns.map(|(a, b)| [a, b]),
                "records_before": l.records_before,
                "records_after": l.records_after,
                "readable": r(&l.readable),
                "missing": r(&l.gaps),
            })
        })
        .collect();
    serde_json::json!({
        "records": j.records(),
        "torn_tail": j.torn_tail(),
        "damage": damage,
        "clients": clients,
    })
    .to_string()
}

fn to_text(j: &Journal) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} records{}{}",
        j.records(),
        if j.torn_tail() {
            " (torn tail ignored)"
        } else {
            ""
        },
        if j.damage().is_empty() {
            String::new()
        } else {
            format!(
                " (DAMAGED: {} range(s); run with --verify)",
                j.damage().len()
            )
        }
    );
    for (name, c) in j.clients() {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let _ = write!(
            s,
            "{name}: count={} first={} last={}",
            c.count,
            opt(c.first),
            opt(c.last)
        );
        if !c.duplicates.is_empty() {
            let _ = write!(s, " duplicates={:?}", c.duplicates);
        }
        let incarnations = incarnations::split(&c.sequences, &c.refused);
        let missing = real_gaps(&incarnations);
        if incarnations.len() > 1 {
            let _ = write!(s, " incarnations={}", incarnations.len());
        }
        if !missing.is_empty() {
            let list: Vec<String> = missing
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}..={b}")
                    }
                })
                .collect();
            let _ = write!(s, " missing=[{}]", list.join(","));
        }
        if !c.refused.is_empty() {
            let _ = write!(s, " refused={}", c.refused.len());
        }
        match c.unread.len() {
            0 => {}
            1..=20 => {
                let _ = write!(s, " unread={:?}", c.unread);
            }
            n => {
                let _ = write!(s, " unread={n}");
            }
        }
        s.push('\n');
        if incarnations.len() > 1 {
            const SHOWN: usize = 10;
            let skipped = incarnations.len().saturating_sub(SHOWN);
            if skipped > 0 {
                let _ = writeln!(s, "  ... {skipped} older incarnation(s)");
            }
            for i in &incarnations[skipped..] {
                let _ = writeln!(
                    s,
                    "  incarnation seq {}..={}: count={}{}",
                    i.first,
                    i.last,
                    i.count,
                    if i.missing.is_empty() {
                        String::new()
                    } else {
                        format!(" missing={}", i.missing.len())
                    }
                );
            }
        }
    }
    s.trim_end().to_string()
}
