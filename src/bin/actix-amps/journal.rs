//! `actix-amps journal`: what each client name persisted in a stopped server's data directory.

use std::fmt::Write as _;
use std::path::PathBuf;

use actix_amps::server::Journal;
use clap::Args;

/// Arguments of `journal`.
#[derive(Args, Debug)]
pub struct JournalArgs {
    /// The server's data directory (the server must not be running on it).
    #[arg(long = "data")]
    data: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Reads the journal and prints it on stdout.
pub fn run(args: JournalArgs) -> Result<(), String> {
    let journal = Journal::read(&args.data).map_err(|e| e.to_string())?;
    let out = if args.json {
        to_json(&journal)
    } else {
        to_text(&journal)
    };
    println!("{out}");
    Ok(())
}

fn to_json(j: &Journal) -> String {
    let clients: serde_json::Map<String, serde_json::Value> = j
        .clients()
        .map(|(name, c)| {
            let v = serde_json::json!({
                "count": c.count,
                "first": c.first,
                "last": c.last,
                "duplicates": c.duplicates,
                "missing": c.missing.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
            });
            (name.to_owned(), v)
        })
        .collect();
    serde_json::json!({
        "records": j.records(),
        "torn_tail": j.torn_tail(),
        "clients": clients,
    })
    .to_string()
}

fn to_text(j: &Journal) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} records{}",
        j.records(),
        if j.torn_tail() {
            " (torn tail ignored)"
        } else {
            ""
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
        if !c.missing.is_empty() {
            let list: Vec<String> = c
                .missing
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
        s.push('\n');
    }
    s.trim_end().to_string()
}
