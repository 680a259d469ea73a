//! Publisher incarnations in a journal: telling a restart from a loss.
//!
//! A client without a durable store (memory or none) starts each process's numbering from the
//! clock: the first sequence is `now_ms * 1_000_000 + 1` (or the server's last plus one, if
//! that is higher). So the same client name, run twice, persists `S1+1..=S1+n` and later
//! `S2+1..=S2+m` with `S2` far above `S1 + n`: the range between them was never assigned, and
//! reporting it as "missing" made every restart look like the loss of trillions of messages.
//!
//! The journal therefore splits a name's sequences (persisted and refused together, sorted)
//! into **incarnations**: a new one begins at a jump forward to a sequence that looks like a
//! clock seed, that is `ms * 1_000_000 + 1 + k` with `ms` after 2000-01-01 and `k` below
//! [`SEED_SLACK`]. Only sequences missing *inside* an incarnation (neither persisted nor
//! refused) are gaps, and a new incarnation that starts `k` past its seed shows its first `k`
//! as missing, so a process whose first writes were lost is still visible (except for the
//! oldest incarnation in the log, whose beginning retention may have removed).
//!
//! What it cannot tell: writes lost at the very end of an incarnation (a memory store's
//! unacknowledged tail when its process died) look like an ordinary restart, because nothing
//! in the log says how far that process got; a client with a file store keeps its numbering
//! across restarts, so for it every gap is real. A real gap that happens to end exactly on a
//! seed-shaped sequence (one chance in a thousand per million sequences) is shown as a
//! restart.

/// A clock seed's offset up to which a jump still counts as a new incarnation (its first
/// writes lost), not as a gap.
pub const SEED_SLACK: u64 = 1000;

/// Sequences per millisecond of the clock seed.
const PER_MS: u64 = 1_000_000;

/// 2000-01-01T00:00:00Z in milliseconds: no clock seed is older.
const EARLIEST_SEED_MS: u64 = 946_684_800_000;

/// One process's writes under a client name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incarnation {
    /// Lowest sequence seen (persisted or refused).
    pub first: u64,
    /// Highest sequence seen.
    pub last: u64,
    /// Persisted records in it (duplicates included, as in the name's total).
    pub count: u64,
    /// Inclusive ranges neither persisted nor refused inside it.
    pub missing: Vec<(u64, u64)>,
}

/// The clock seed `seq` would belong to (`ms * 1_000_000 + 1`), if it looks like one.
fn seed_of(seq: u64) -> Option<u64> {
    let n = seq.checked_sub(1)?;
    let offset = n % PER_MS;
    (offset < SEED_SLACK && n / PER_MS >= EARLIEST_SEED_MS).then_some(seq - offset)
}

/// Splits `persisted` (log order, duplicates allowed) and `refused` into incarnations (module
/// docs), in sequence order.
pub fn split(persisted: &[u64], refused: &[u64]) -> Vec<Incarnation> {
    let mut seen: Vec<u64> = persisted.iter().chain(refused).copied().collect();
    seen.sort_unstable();
    seen.dedup();
    let mut sorted_persisted = persisted.to_vec();
    sorted_persisted.sort_unstable();
    let count_in = |a: u64, b: u64| {
        (sorted_persisted.partition_point(|&s| s <= b)
            - sorted_persisted.partition_point(|&s| s < a)) as u64
    };
    let mut out: Vec<Incarnation> = Vec::new();
    let mut current: Option<Incarnation> = None;
    let mut prev: Option<u64> = None;
    for &seq in &seen {
        let jump = prev.is_some_and(|p| seq > p + 1);
        let restart = match (prev, seed_of(seq)) {
            (None, _) => true,
            (Some(_), Some(seed)) => jump && prev.is_some_and(|p| seed > p),
            (Some(_), None) => false,
        };
        if restart {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let mut missing = Vec::new();
            // Not for a name's first incarnation in the log: retention may have removed its
            // beginning.
            if let Some(seed) = seed_of(seq).filter(|&s| s < seq && prev.is_some()) {
                missing.push((seed, seq - 1));
            }
            current = Some(Incarnation {
                first: seq,
                last: seq,
                count: 0,
                missing,
            });
        } else if let Some(c) = &mut current {
            if jump {
                c.missing.push((c.last + 1, seq - 1));
            }
            c.last = seq;
        }
        prev = Some(seq);
    }
    out.extend(current);
    for inc in &mut out {
        inc.count = count_in(inc.first, inc.last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: u64 = 1_796_134_884_540_000_001;
    const S2: u64 = 1_796_134_884_607_000_001;

    #[test]
    fn a_restart_is_a_new_incarnation_not_a_gap() {
        let persisted = [S1, S1 + 1, S1 + 2, S2, S2 + 1, S2 + 2];
        let got = split(&persisted, &[]);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].first, got[0].last, got[0].count), (S1, S1 + 2, 3));
        assert_eq!((got[1].first, got[1].last, got[1].count), (S2, S2 + 2, 3));
        assert!(got.iter().all(|i| i.missing.is_empty()));
    }

    #[test]
    fn gaps_inside_an_incarnation_and_at_its_start_stay_gaps() {
        // S2's first two writes lost, and one in the middle of S1.
        let persisted = [S1, S1 + 2, S2 + 2, S2 + 3];
        let got = split(&persisted, &[]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].missing, [(S1 + 1, S1 + 1)]);
        assert_eq!(got[1].missing, [(S2, S2 + 1)]);
    }

    #[test]
    fn refused_sequences_are_not_missing() {
        let got = split(&[S1, S1 + 2], &[S1 + 1]);
        assert_eq!(got.len(), 1);
        assert!(got[0].missing.is_empty());
        assert_eq!(got[0].count, 2);
    }

    #[test]
    fn small_sequences_never_split() {
        // A file store's numbering (or a test's): every gap is a gap.
        let got = split(&[1, 2, 5, 1_000_001, 1_000_002], &[]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].missing, [(3, 4), (6, 1_000_000)]);
    }

    #[test]
    fn duplicates_count_and_an_empty_name_has_none() {
        let got = split(&[S1, S1, S1 + 1], &[]);
        assert_eq!(got[0].count, 3);
        assert!(split(&[], &[]).is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any number of contiguous runs from distinct seeds: one incarnation each, no gap.
        #[test]
        fn contiguous_runs_from_seeds_never_show_gaps(
            runs in proptest::collection::vec((1u64..1_000_000, 1u64..50), 1..6)
        ) {
            let mut seqs = Vec::new();
            let mut ms = 1_796_000_000_000u64;
            for (step, len) in &runs {
                ms += step;
                let seed = ms * PER_MS + 1;
                seqs.extend(seed..seed + len);
            }
            let got = split(&seqs, &[]);
            proptest::prop_assert_eq!(got.len(), runs.len());
            proptest::prop_assert!(got.iter().all(|i| i.missing.is_empty()));
            proptest::prop_assert_eq!(got.iter().map(|i| i.count).sum::<u64>(), seqs.len() as u64);
        }
    }
}
