//! Reading a stopped server's transaction log: what each client name persisted.
//!
//! [`Journal::read`] takes the data directory's lock (so it refuses with
//! [`ServerError::Locked`] while a server runs there), scans the log without modifying it
//! (a torn tail is ignored, as the server would cut it off), and summarises every sequenced
//! write per client name: how many, the first and last sequence, any sequence seen more than
//! once, and the gaps inside the first..=last range.

use std::collections::BTreeMap;
use std::path::Path;

use super::txlog::{scan, LOG_FILE};
use crate::error::ServerError;

/// What one client name persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientJournal {
    /// Number of persisted sequenced writes.
    pub count: u64,
    /// Lowest sequence.
    pub first: Option<u64>,
    /// Highest sequence.
    pub last: Option<u64>,
    /// Sequences persisted more than once (each listed once).
    pub duplicates: Vec<u64>,
    /// Inclusive gaps inside `first..=last`.
    pub missing: Vec<(u64, u64)>,
    /// Every persisted sequence, in log order.
    pub sequences: Vec<u64>,
}

/// The per-client summary of a data directory's transaction log.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    clients: BTreeMap<String, ClientJournal>,
    records: u64,
    torn_tail: bool,
}

impl Journal {
    /// Reads the log under `data_dir`. Fails with [`ServerError::Locked`] while a server holds
    /// the directory.
    pub fn read(data_dir: &Path) -> Result<Journal, ServerError> {
        if !data_dir.is_dir() {
            return Err(ServerError::Io {
                path: data_dir.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            });
        }
        let lock = super::lock_data_dir(data_dir)?;
        let mut clients: BTreeMap<String, ClientJournal> = BTreeMap::new();
        let end = scan(&data_dir.join(LOG_FILE), |rec| {
            if let Some(seq) = rec.seq {
                let c = match clients.get_mut(rec.client) {
                    Some(c) => c,
                    None => clients.entry(rec.client.to_owned()).or_default(),
                };
                c.sequences.push(seq);
            }
        })?;
        drop(lock);
        for c in clients.values_mut() {
            c.count = c.sequences.len() as u64;
            let mut sorted = c.sequences.clone();
            sorted.sort_unstable();
            c.first = sorted.first().copied();
            c.last = sorted.last().copied();
            for w in sorted.windows(2) {
                if w[0] == w[1] {
                    if c.duplicates.last() != Some(&w[0]) {
                        c.duplicates.push(w[0]);
                    }
                } else if w[1] > w[0] + 1 {
                    c.missing.push((w[0] + 1, w[1] - 1));
                }
            }
        }
        Ok(Journal {
            clients,
            records: end.records,
            torn_tail: end.file_len > end.good_len,
        })
    }

    /// Every client name with its summary, sorted by name.
    pub fn clients(&self) -> impl Iterator<Item = (&str, &ClientJournal)> {
        self.clients.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// One client name's summary.
    pub fn client(&self, name: &str) -> Option<&ClientJournal> {
        self.clients.get(name)
    }

    /// Number of good records in the log (sequenced or not).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether the log ends in a torn or corrupt record (the server cuts it off on start).
    pub fn torn_tail(&self) -> bool {
        self.torn_tail
    }
}
