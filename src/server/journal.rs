//! Reading a stopped server's transaction log: what each client name persisted.
//!
//! [`Journal::read`] takes the data directory's lock (so it refuses with
//! [`ServerError::Locked`] while a server runs there), scans the log without modifying it
//! (a torn tail is ignored, as the server would cut it off), and summarises every sequenced
//! write per client name: how many, the first and last sequence, any sequence seen more than
//! once, and the gaps inside the first..=last range; and the refused sequences, with those
//! whose failure no connection has demonstrably read yet.

use std::collections::BTreeMap;
use std::path::Path;

use super::txlog::{read_sequences, scan, RecordKind, LOG_FILE};
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
    /// Every refused sequence (a failure ack was owed for it), in log order.
    pub refused: Vec<u64>,
    /// Refused sequences whose failure no connection demonstrably read yet (re-sent after the
    /// next logon of this client name).
    pub unread: Vec<u64>,
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
        let mut unread: BTreeMap<String, std::collections::BTreeSet<u64>> = BTreeMap::new();
        let end = scan(&data_dir.join(LOG_FILE), |rec| {
            let c = match clients.get_mut(rec.client) {
                Some(c) => c,
                None => clients.entry(rec.client.to_owned()).or_default(),
            };
            match (rec.kind, rec.seq) {
                (RecordKind::Refusal, Some(seq)) => {
                    c.refused.push(seq);
                    unread.entry(rec.client.to_owned()).or_default().insert(seq);
                }
                (RecordKind::FailuresRead, _) => {
                    if let Some(u) = unread.get_mut(rec.client) {
                        for seq in read_sequences(rec.body) {
                            u.remove(&seq);
                        }
                    }
                }
                (kind, Some(seq)) if kind.is_write() => c.sequences.push(seq),
                _ => {}
            }
        })?;
        clients.retain(|_, c| !c.sequences.is_empty() || !c.refused.is_empty());
        for (name, u) in unread {
            if let Some(c) = clients.get_mut(&name) {
                c.unread = u.into_iter().collect();
            }
        }
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
