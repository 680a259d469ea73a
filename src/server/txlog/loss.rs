//! What a damaged range cost: the LSNs it held, the records still readable in it (without a
//! checksum, so unverified), and per client name the sequences missing across it.

use std::collections::BTreeMap;
use std::fs::File;

use super::check::LogCheck;
use super::files::io_err;
use super::format::{decode_payload, split_prefix, Decoded, MAX_PAYLOAD, MIN_PAYLOAD, PREFIX_LEN};
use super::scan::{DamagedRange, Window};
use crate::error::ServerError;

/// Sequences of one client name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRange {
    /// The client name.
    pub client: String,
    /// First sequence.
    pub first: u64,
    /// Last sequence.
    pub last: u64,
    /// How many records (for readable records; for gaps, `last - first + 1`).
    pub records: u64,
}

/// One damaged range and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossReport {
    /// Where the damage is.
    pub range: DamagedRange,
    /// Intact records before it in the log.
    pub records_before: u64,
    /// Intact records after it.
    pub records_after: u64,
    /// The LSNs it held (none when the records on both sides are consecutive).
    pub lost_lsns: Option<(u64, u64)>,
    /// Records whose fields can still be read in the damaged bytes (checksum failed, so the
    /// content is unverified), per client name.
    pub readable: Vec<ClientRange>,
    /// Per client name, the sequences between its last record before the damage and its first
    /// record after it (only when LSNs were lost): what the damage most likely held, unless those
    /// writes were refused.
    pub gaps: Vec<ClientRange>,
}

/// Per client name, `(lsn, seq)` of every sequenced write, in log order.
pub type SequenceIndex = BTreeMap<String, Vec<(u64, u64)>>;

/// Adds a record to the index.
pub fn index_record(index: &mut SequenceIndex, d: &Decoded<'_>) {
    if let Decoded::Record { lsn, record, .. } = d {
        if let (Some(seq), true) = (record.seq, record.kind.is_write()) {
            match index.get_mut(record.client) {
                Some(v) => v.push((*lsn, seq)),
                None => {
                    index.insert(record.client.to_owned(), vec![(*lsn, seq)]);
                }
            }
        }
    }
}

/// Describes every damaged range of `check`.
pub fn describe_losses(
    check: &LogCheck,
    index: &SequenceIndex,
) -> Result<Vec<LossReport>, ServerError> {
    let mut out = Vec::new();
    for d in &check.damage {
        let lost = d.lost_lsns();
        let readable = read_damaged(d, lost)?;
        let mut gaps = Vec::new();
        if lost.is_some() {
            for (client, seqs) in index {
                let before = seqs
                    .iter()
                    .filter(|(l, _)| *l <= d.lsn_before)
                    .map(|(_, s)| *s)
                    .max();
                let after = seqs
                    .iter()
                    .filter(|(l, _)| *l >= d.lsn_after)
                    .map(|(_, s)| *s)
                    .min();
                let first = before.map_or(1, |b| b + 1);
                let last = match (before, after) {
                    (_, Some(a)) => a.saturating_sub(1),
                    // No record after: the client's last writes may be in the damage; the
                    // readable records say which.
                    (Some(_), None) => continue,
                    (None, None) => continue,
                };
                if last >= first {
                    gaps.push(ClientRange {
                        client: client.clone(),
                        first,
                        last,
                        records: last - first + 1,
                    });
                }
            }
        }
        out.push(LossReport {
            range: d.clone(),
            records_before: d.records_before,
            records_after: check.records_after(d),
            lost_lsns: lost,
            readable,
            gaps,
        });
    }
    Ok(out)
}

/// Walks the damaged bytes for records whose fields still decode (ignoring checksums) and
/// whose LSN is one of the lost ones.
fn read_damaged(
    d: &DamagedRange,
    lost: Option<(u64, u64)>,
) -> Result<Vec<ClientRange>, ServerError> {
    let Some((lo, hi)) = lost else {
        return Ok(Vec::new());
    };
    if d.end <= d.start {
        return Ok(Vec::new());
    }
    let file = File::open(&d.path).map_err(|e| io_err(&d.path, e))?;
    let mut win = Window::new(file, d.end);
    let mut per: BTreeMap<String, ClientRange> = BTreeMap::new();
    let mut off = d.start;
    while off + PREFIX_LEN + MIN_PAYLOAD <= d.end {
        let io = |e| io_err(&d.path, e);
        let head = win.get(off, 8).map_err(io)?;
        let Ok(prefix) = <[u8; 8]>::try_from(head) else {
            break;
        };
        let (len, _) = split_prefix(&prefix);
        let len = u64::from(len);
        if (MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) && off + PREFIX_LEN + len <= d.end {
            let bytes = win.get(off + PREFIX_LEN, len as usize).map_err(io)?;
            if let Ok(Decoded::Record { lsn, record, .. }) = decode_payload(bytes) {
                if (lo..=hi).contains(&lsn) {
                    if let (Some(seq), true) = (record.seq, record.kind.is_write()) {
                        let e = per.entry(record.client.to_owned()).or_insert(ClientRange {
                            client: record.client.to_owned(),
                            first: seq,
                            last: seq,
                            records: 0,
                        });
                        e.first = e.first.min(seq);
                        e.last = e.last.max(seq);
                        e.records += 1;
                    }
                    off += PREFIX_LEN + len;
                    continue;
                }
            }
        }
        off += 1;
    }
    Ok(per.into_values().collect())
}
