//! Reading a stopped server's transaction log: what each client name persisted.
//!
//! [`Journal::read`] takes the data directory's lock (so it refuses with
//! [`ServerError::Locked`] while a server runs there), scans every segment of the log without
//! modifying it (a torn tail is ignored, as the server would cut it off), and summarises every
//! sequenced write per client name: how many, the first and last sequence, any sequence seen
//! more than once, and the gaps inside the first..=last range. Damage does not stop it: every
//! intact record on both sides is counted, and [`Journal::damage`] lists each damaged range
//! with what it cost (the `journal --verify` report).
//!
//! It also lists each client name's refused sequences (refusal records in the retained log)
//! and those whose failure no connection has demonstrably read yet: the newest intact
//! snapshot's unread set, then the refusal and read records after it, as the server rebuilds
//! it on start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::txlog::format::read_sequences;
use super::txlog::loss::{describe_losses, index_record, LossReport, SequenceIndex};
use super::txlog::snapshot::{check_snapshot, list_snapshots, Entry, SnapshotCheck};
use super::txlog::{check_log, Decoded, RecordKind};
use crate::error::ServerError;

/// What one client name persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Every refused sequence (a failure ack was owed for it), in log order of its first
    /// refusal. A write replayed and refused again after a restart is listed once.
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
    damage: Vec<LossReport>,
    segments: usize,
    first_lsn: u64,
    last_lsn: u64,
    repair_gaps: Vec<(u64, u64, String)>,
    snapshots: Vec<SnapshotCheck>,
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
        // Snapshots first: the newest intact one's unread failures are where the log's
        // refusal and read records after it start from.
        let mut snapshots = Vec::new();
        let mut snapshot_unread = BTreeMap::new();
        let mut snapshot_lsn = 0;
        for (_, path) in list_snapshots(data_dir)? {
            let mut unread: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
            let check = check_snapshot(&path, |e| {
                if let Entry::Unread(client, seq, _) = e {
                    unread.entry(client.to_owned()).or_default().insert(seq);
                }
            })?
            .0;
            if check.is_intact() {
                snapshot_unread = unread;
                snapshot_lsn = check.lsn;
            }
            snapshots.push(check);
        }
        let mut unread = snapshot_unread;
        let mut refused: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut bookkeeping = 0u64;
        let mut index = SequenceIndex::new();
        let mut first_lsn = 0;
        let mut repair_gaps = Vec::new();
        let check = check_log(data_dir, 0, |d, _| {
            if first_lsn == 0 {
                first_lsn = d.lsn();
            }
            if let Decoded::Record { lsn, record, .. } = d {
                match record.kind {
                    RecordKind::RepairGap => {
                        let from = record.seq.unwrap_or(*lsn);
                        let file = String::from_utf8_lossy(record.body).into_owned();
                        repair_gaps.push((from, *lsn, file));
                    }
                    RecordKind::Refusal => {
                        bookkeeping += 1;
                        if let Some(seq) = record.seq {
                            refused
                                .entry(record.client.to_owned())
                                .or_default()
                                .push(seq);
                            if *lsn > snapshot_lsn {
                                unread
                                    .entry(record.client.to_owned())
                                    .or_default()
                                    .insert(seq);
                            }
                        }
                    }
                    RecordKind::FailuresRead => {
                        bookkeeping += 1;
                        if let (true, Some(u)) =
                            (*lsn > snapshot_lsn, unread.get_mut(record.client))
                        {
                            for seq in read_sequences(record.body) {
                                u.remove(&seq);
                            }
                        }
                    }
                    _ => {}
                }
            }
            index_record(&mut index, d);
        })?;
        let damage = describe_losses(&check, &index)?;
        drop(lock);
        let mut clients: BTreeMap<String, ClientJournal> = index
            .into_iter()
            .map(|(name, seqs)| {
                let c = ClientJournal {
                    sequences: seqs.into_iter().map(|(_, s)| s).collect(),
                    ..ClientJournal::default()
                };
                (name, c)
            })
            .collect();
        for (name, seqs) in refused {
            clients.entry(name).or_default().refused = first_occurrences(seqs);
        }
        for (name, u) in unread {
            if !u.is_empty() {
                clients.entry(name).or_default().unread = u.into_iter().collect();
            }
        }
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
            records: check.records - repair_gaps.len() as u64 - bookkeeping,
            repair_gaps,
            snapshots,
            torn_tail: check.torn_tail.is_some(),
            damage,
            segments: check.segments.len(),
            first_lsn,
            last_lsn: check.last_lsn,
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

    /// Number of intact records of client writes in the log (sequenced or not; repair gap,
    /// refusal and failures-read records not counted).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether the log ends in a torn write (the server cuts it off on start).
    pub fn torn_tail(&self) -> bool {
        self.torn_tail
    }

    /// Every damaged range with what it cost; empty for a healthy log.
    pub fn damage(&self) -> &[LossReport] {
        &self.damage
    }

    /// LSN ranges an earlier repair recorded as lost, with the quarantine file of each.
    pub fn repair_gaps(&self) -> &[(u64, u64, String)] {
        &self.repair_gaps
    }

    /// The snapshots and their health.
    pub fn snapshots(&self) -> &[SnapshotCheck] {
        &self.snapshots
    }

    /// Whether the log and every snapshot are intact.
    pub fn is_intact(&self) -> bool {
        self.damage.is_empty() && self.snapshots.iter().all(SnapshotCheck::is_intact)
    }

    /// Segment files read.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// LSNs of the first and last intact record (0 for none).
    pub fn lsn_range(&self) -> (u64, u64) {
        (self.first_lsn, self.last_lsn)
    }
}

/// `seqs` without repeats, each at its first position.
fn first_occurrences(seqs: Vec<u64>) -> Vec<u64> {
    let mut seen = std::collections::HashSet::with_capacity(seqs.len());
    seqs.into_iter().filter(|s| seen.insert(*s)).collect()
}

#[cfg(test)]
mod tests {
    use super::first_occurrences;

    #[test]
    fn a_sequence_refused_again_after_a_restart_is_listed_once() {
        assert_eq!(first_occurrences(vec![5, 7, 5, 9, 7]), vec![5, 7, 9]);
        assert_eq!(first_occurrences(Vec::new()), Vec::<u64>::new());
    }
}
