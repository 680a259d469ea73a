//! Bookmarks: naming a message of the transaction log, and finding where a replay starts.
//!
//! # What a bookmark is
//!
//! Every message the server delivers carries a bookmark `<publisher>|<sequence>|`. For a write
//! that carried a publisher sequence number (`s`, sent by clients with a publish store) it is
//! the FNV-1a hash of the publishing client's name and that sequence, the same form as the
//! logon ack's `bm`. A write without `s` gets a publisher of its own, the hash of the client
//! name followed by the byte `0xff` (no UTF-8 name can end so), and its transaction-log
//! position as the sequence; so a publisher's sequences always increase along the log and never
//! mix with the numbers a publish store chooses. See [`bookmark_of`].
//!
//! # What a subscription may ask for
//!
//! A subscribe's `bookmark` ([`BookmarkSpec::parse`]) is one of:
//!
//! - `0`: EPOCH, everything the log still holds, then live;
//! - `0|1|`: NOW, only messages written from now on (the same as no bookmark);
//! - `<publisher>|<sequence>|`: resume after that message;
//! - a comma list of those: resume so that, for each listed publisher, nothing at or below its
//!   listed sequence is delivered (what a client's bookmark store sends when several
//!   publishers feed a topic). Replay starts right after the earliest listed message, and
//!   publishers that are not listed are delivered from there;
//! - a timestamp `YYYYMMDDTHHMMSS[.ffffff]Z` (UTC): from the first message written at or after
//!   it.
//!
//! A publisher bookmark that the log does not hold (an unknown publisher, or a sequence below
//! the first one the log holds for it) fails the subscription with [`BOOKMARK_NOT_FOUND`]: the
//! server cannot know what the subscriber has missed, so it neither guesses EPOCH (duplicates)
//! nor NOW (a gap). A sequence above the publisher's last one resumes after its last message.
//!
//! # Finding the start without holding the log in memory
//!
//! [`BookmarkIndex`] is noted for every record as it is accepted (and rebuilt on recovery):
//! per publisher, runs of records whose sequence and log position both advance by one (a
//! publisher streaming alone is one run, whatever its length, so the index stays small). A
//! publisher bookmark resolves to an exact log position from the runs; a timestamp is found
//! by the log reader itself (records carry their timestamps). [`ReplayFilter`] is the rule a
//! replay applies to each record it reads. Records the log no longer retains (retention) are
//! not held, whatever the index says: the caller passes the first retained position.

use std::collections::HashMap;

use crate::error::ServerError;
use crate::protocol::Reason;
use crate::server::subscriptions::delivery::Bookmark;
use crate::server::txlog::{LogReader, StartAt};

/// The reason a subscription fails with when the log does not hold its bookmark.
pub const BOOKMARK_NOT_FOUND: &str = "bookmark not found in the transaction log";

/// FNV-1a, 64 bits, over bytes.
pub(crate) fn fnv1a_bytes(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The bookmark of a logged write: `client` wrote it at log position `lsn`, with publisher
/// sequence `seq` when it carried one (module docs).
pub(crate) fn bookmark_of(client: &str, seq: Option<u64>, lsn: u64) -> Bookmark {
    match seq {
        Some(seq) => Bookmark {
            publisher: fnv1a_bytes(&[client.as_bytes()]),
            seq,
        },
        None => Bookmark {
            publisher: fnv1a_bytes(&[client.as_bytes(), &[0xff]]),
            seq: lsn,
        },
    }
}

/// Where a subscription asks its replay to start (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BookmarkSpec {
    /// `0`: everything retained.
    Epoch,
    /// `0|1|`: nothing from the log.
    Now,
    /// One or more publisher bookmarks.
    After(Vec<Bookmark>),
    /// Microseconds since the Unix epoch.
    Since(u64),
}

impl BookmarkSpec {
    /// Parses a subscribe's `bookmark`; anything else is `invalid bookmark`.
    pub fn parse(text: &str) -> Result<BookmarkSpec, Reason> {
        let text = text.trim();
        match text {
            "0" => return Ok(BookmarkSpec::Epoch),
            "0|1|" => return Ok(BookmarkSpec::Now),
            _ => {}
        }
        if !text.contains('|') {
            return parse_timestamp(text)
                .map(BookmarkSpec::Since)
                .ok_or(Reason::InvalidBookmark);
        }
        let mut list = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut fields = entry.split('|');
            let (Some(p), Some(s)) = (fields.next(), fields.next()) else {
                return Err(Reason::InvalidBookmark);
            };
            // `hash|seq|`: the trailing separator leaves one empty field; nothing else may follow.
            if fields.any(|f| !f.is_empty()) {
                return Err(Reason::InvalidBookmark);
            }
            let (Ok(publisher), Ok(seq)) = (p.parse::<u64>(), s.parse::<u64>()) else {
                return Err(Reason::InvalidBookmark);
            };
            if publisher == 0 {
                // 0|1| (NOW) and other zero-publisher forms inside a list name no message.
                return Err(Reason::InvalidBookmark);
            }
            list.push(Bookmark { publisher, seq });
        }
        if list.is_empty() {
            return Err(Reason::InvalidBookmark);
        }
        Ok(BookmarkSpec::After(list))
    }
}

// -- timestamps -------------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYYMMDDTHHMMSS.ffffffZ` (UTC, microseconds), the AMPS timestamp form.
pub(crate) fn format_timestamp(micros: u64) -> String {
    let secs = (micros / 1_000_000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        micros % 1_000_000
    )
}

/// Parses `YYYYMMDDTHHMMSS[.f{1,9}]Z` (UTC) into microseconds since the Unix epoch (fractions
/// below a microsecond are dropped); `None` for anything else or a date before 1970.
pub(crate) fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let body = text.strip_suffix('Z')?;
    if b.len() < 16 || b[8] != b'T' {
        return None;
    }
    let digits = |s: &str| -> Option<u32> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (
        digits(body.get(0..4)?)?,
        digits(body.get(4..6)?)?,
        digits(body.get(6..8)?)?,
    );
    let (h, mi, s) = (
        digits(body.get(9..11)?)?,
        digits(body.get(11..13)?)?,
        digits(body.get(13..15)?)?,
    );
    let frac_micros = match body.get(15..)? {
        "" => 0,
        f => {
            let f = f.strip_prefix('.')?;
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut padded = f.to_owned();
            while padded.len() < 6 {
                padded.push('0');
            }
            padded[..6].parse::<u64>().ok()?
        }
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y < 1970 || !(1..=12).contains(&mo) || d == 0 || d > month_days[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(frac_micros)
}

// -- the index --------------------------------------------------------------------------------

/// Consecutive records of one publisher whose sequence and log position both advance by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    seq: u64,
    lsn: u64,
    len: u64,
}

/// Hashes a publisher key, which is already an FNV-1a hash, by passing it through.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; anything else is folded in, FNV style.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Per-publisher runs over the log (module docs).
#[derive(Debug, Default)]
pub(crate) struct BookmarkIndex {
    publishers: HashMap<u64, Vec<Run>, std::hash::BuildHasherDefault<PassThrough>>,
}

impl BookmarkIndex {
    /// Notes the record at log position `lsn` (above every one noted before) with bookmark
    /// `bm`.
    pub fn note(&mut self, lsn: u64, bm: Bookmark) {
        let runs = self.publishers.entry(bm.publisher).or_default();
        if let Some(r) = runs.last_mut() {
            if r.seq + r.len == bm.seq && r.lsn + r.len == lsn {
                r.len += 1;
                return;
            }
            if bm.seq < r.seq + r.len {
                // A publisher's sequences only grow along the log (duplicates are refused); a
                // hash collision between two names could break that, and then the earlier
                // runs keep answering for the sequences they hold.
                return;
            }
        }
        runs.push(Run {
            seq: bm.seq,
            lsn,
            len: 1,
        });
    }

    /// The log position of `publisher`'s last record with a sequence at or below `seq`, or
    /// `None` when no such record was noted.
    #[cfg(test)]
    pub fn position_of(&self, bm: Bookmark) -> Option<u64> {
        self.last_at_or_below(bm).map(|(lsn, _)| lsn)
    }

    /// The log position and sequence of `publisher`'s last record with a sequence at or below
    /// `seq`.
    fn last_at_or_below(&self, bm: Bookmark) -> Option<(u64, u64)> {
        let runs = self.publishers.get(&bm.publisher)?;
        let idx = runs.partition_point(|r| r.seq <= bm.seq).checked_sub(1)?;
        let r = runs[idx];
        Some(if bm.seq < r.seq + r.len {
            (r.lsn + (bm.seq - r.seq), bm.seq)
        } else {
            (r.lsn + r.len - 1, r.seq + r.len - 1)
        })
    }

    /// Puts `earlier` (an index of the records before every one noted here) in front.
    pub fn prepend(&mut self, earlier: BookmarkIndex) {
        for (publisher, mut runs) in earlier.publishers {
            let later = self.publishers.remove(&publisher).unwrap_or_default();
            runs.extend(later);
            self.publishers.insert(publisher, runs);
        }
    }

    /// Indexes the log records `from..=to` of the log in `dir`. Recovery from a snapshot
    /// replays only what follows it, but a replay may start at any record the log retains.
    pub fn of_log_range(
        dir: &std::path::Path,
        from: u64,
        to: u64,
    ) -> Result<BookmarkIndex, ServerError> {
        let mut ix = BookmarkIndex::default();
        if from > to {
            return Ok(ix);
        }
        let mut reader = LogReader::open(dir, StartAt::Lsn(from))?.with_limit(to);
        while let Some(e) = reader.next_entry()? {
            if e.record.kind.is_write() {
                ix.note(e.lsn, bookmark_of(e.record.client, e.record.seq, e.lsn));
            }
        }
        Ok(ix)
    }

    /// Resolves a bookmark into the rule a replay applies, or `None` for NOW (no replay), for
    /// a log whose oldest retained record is `first_held`. Fails with [`BOOKMARK_NOT_FOUND`]
    /// for a publisher bookmark the log does not hold: unknown, or whose record is no longer
    /// retained.
    pub fn resolve(
        &self,
        spec: &BookmarkSpec,
        first_held: u64,
    ) -> Result<Option<ReplayFilter>, Reason> {
        let first_held = first_held.max(1);
        Ok(Some(match spec {
            BookmarkSpec::Now => return Ok(None),
            BookmarkSpec::Epoch => ReplayFilter {
                first_lsn: first_held,
                ..ReplayFilter::default()
            },
            BookmarkSpec::Since(ts) => ReplayFilter {
                first_lsn: first_held,
                min_ts: *ts,
                ..ReplayFilter::default()
            },
            BookmarkSpec::After(list) => {
                let mut first = u64::MAX;
                let mut skip = Vec::with_capacity(list.len());
                for bm in list {
                    let (at, seq) = self
                        .last_at_or_below(*bm)
                        .filter(|(at, _)| *at >= first_held)
                        .ok_or_else(|| Reason::Other(BOOKMARK_NOT_FOUND.to_owned()))?;
                    first = first.min(at + 1);
                    // A bookmark past the publisher's last message stands for that message:
                    // what the publisher writes next is new, in the replay as live.
                    skip.push(Bookmark {
                        publisher: bm.publisher,
                        seq,
                    });
                }
                ReplayFilter {
                    first_lsn: first,
                    skip,
                    min_ts: 0,
                }
            }
        }))
    }
}

/// Which records of the log a replay delivers (before its content filter): from `first_lsn`
/// on, written at or after `min_ts`, and for each publisher in `skip` nothing at or below its
/// sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplayFilter {
    /// The first log position that may be delivered.
    pub first_lsn: u64,
    /// Per publisher, the highest sequence the subscriber already has.
    pub skip: Vec<Bookmark>,
    /// The earliest timestamp delivered (microseconds).
    pub min_ts: u64,
}

impl ReplayFilter {
    /// Whether the record at `lsn` with bookmark `bm` and timestamp `ts` is delivered.
    pub fn wants(&self, lsn: u64, bm: Bookmark, ts: u64) -> bool {
        lsn >= self.first_lsn
            && ts >= self.min_ts
            && !self
                .skip
                .iter()
                .any(|b| b.publisher == bm.publisher && bm.seq <= b.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bm(publisher: u64, seq: u64) -> Bookmark {
        Bookmark { publisher, seq }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(BookmarkSpec::parse("0"), Ok(BookmarkSpec::Epoch));
        assert_eq!(BookmarkSpec::parse("0|1|"), Ok(BookmarkSpec::Now));
        assert_eq!(
            BookmarkSpec::parse("7075788419138218234|42|"),
            Ok(BookmarkSpec::After(vec![bm(7075788419138218234, 42)]))
        );
        assert_eq!(
            BookmarkSpec::parse("555|10|,7075788419138218234|2|"),
            Ok(BookmarkSpec::After(vec![
                bm(555, 10),
                bm(7075788419138218234, 2)
            ]))
        );
        assert_eq!(
            BookmarkSpec::parse("12|3"),
            Ok(BookmarkSpec::After(vec![bm(12, 3)]))
        );
        assert_eq!(
            BookmarkSpec::parse("20261124T120000Z"),
            Ok(BookmarkSpec::Since(
                parse_timestamp("20261124T120000Z").unwrap()
            ))
        );
        for bad in [
            "",
            "garbage",
            "12|x|",
            "x|1|",
            "1|2|3|",
            "0|5|",
            "|",
            ",",
            "recent",
            "2026",
            "20261324T120000Z",
            "20261124T120000",
            "20261124T250000Z",
            "20261124T120000.Z",
            "12|3|,0|1|",
        ] {
            assert_eq!(
                BookmarkSpec::parse(bad),
                Err(Reason::InvalidBookmark),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timestamps_format_and_parse() {
        assert_eq!(format_timestamp(0), "19700101T000000.000000Z");
        let t = parse_timestamp("20261124T120000.123456Z").unwrap();
        assert_eq!(format_timestamp(t), "20261124T120000.123456Z");
        assert_eq!(parse_timestamp("20261124T120000Z").unwrap() + 123_456, t);
        assert_eq!(
            parse_timestamp("20261124T120000.1Z").unwrap(),
            parse_timestamp("20261124T120000Z").unwrap() + 100_000
        );
        assert_eq!(
            parse_timestamp("20261124T120000.123456789Z").unwrap(),
            t,
            "nanoseconds are dropped"
        );
        assert_eq!(parse_timestamp("20240229T000000Z").map(|_| ()), Some(()));
        assert_eq!(parse_timestamp("20230229T000000Z"), None);
        assert_eq!(parse_timestamp("19691231T235959Z"), None);
        // 2000-03-01 is day 11017.
        assert_eq!(
            parse_timestamp("20000301T000000Z"),
            Some(11_017 * 86_400 * 1_000_000)
        );
    }

    #[test]
    fn sequenced_and_unsequenced_writes_have_separate_publishers() {
        let a = bookmark_of("pub-1", Some(10), 3);
        let b = bookmark_of("pub-1", None, 4);
        assert_eq!(a, bm(fnv1a_bytes(&[b"pub-1"]), 10));
        assert_ne!(a.publisher, b.publisher);
        assert_eq!(
            b.seq, 4,
            "an unsequenced write's sequence is its log position"
        );
    }

    fn index(records: &[(u64, Bookmark, u64)]) -> BookmarkIndex {
        let mut ix = BookmarkIndex::default();
        for (lsn, b, _) in records {
            ix.note(*lsn, *b);
        }
        ix
    }

    #[test]
    fn an_earlier_index_goes_in_front() {
        let mut later = index(&[(3, bm(1, 12), 0), (4, bm(2, 5), 0)]);
        later.prepend(index(&[(1, bm(1, 10), 0), (2, bm(1, 11), 0)]));
        assert_eq!(later.position_of(bm(1, 10)), Some(1));
        assert_eq!(later.position_of(bm(1, 12)), Some(3));
        assert_eq!(later.position_of(bm(2, 5)), Some(4));
    }

    #[test]
    fn publisher_bookmarks_resolve_to_log_positions() {
        // A: seq 10..=12 at lsn 1..=3, B: seq 5 at lsn 4, A: seq 20 at lsn 5.
        let ix = index(&[
            (1, bm(1, 10), 0),
            (2, bm(1, 11), 0),
            (3, bm(1, 12), 0),
            (4, bm(2, 5), 0),
            (5, bm(1, 20), 0),
        ]);
        assert_eq!(ix.position_of(bm(1, 11)), Some(2));
        assert_eq!(
            ix.position_of(bm(1, 15)),
            Some(3),
            "a gap resumes after the last below"
        );
        assert_eq!(
            ix.position_of(bm(1, 99)),
            Some(5),
            "past the end: after the last"
        );
        let ahead = ix
            .resolve(&BookmarkSpec::After(vec![bm(1, 99)]), 1)
            .unwrap()
            .unwrap();
        assert_eq!(ahead.skip, [bm(1, 20)], "stands for the last message");
        assert!(
            ahead.wants(6, bm(1, 21), 0),
            "the publisher's next message is new"
        );
        assert_eq!(ix.position_of(bm(1, 9)), None, "before anything held");
        assert_eq!(ix.position_of(bm(3, 1)), None, "unknown publisher");
        let f = ix
            .resolve(&BookmarkSpec::After(vec![bm(1, 11), bm(2, 5)]), 1)
            .unwrap()
            .unwrap();
        assert_eq!(f.first_lsn, 3);
        assert!(f.wants(3, bm(1, 12), 0));
        assert!(!f.wants(4, bm(2, 5), 0));
        assert!(f.wants(5, bm(1, 20), 0));
        assert_eq!(
            ix.resolve(&BookmarkSpec::After(vec![bm(1, 11), bm(9, 1)]), 1),
            Err(Reason::Other(BOOKMARK_NOT_FOUND.into()))
        );
        // Retention took lsn 1..=2: the bookmark at 2 is no longer held, the one at 3 is.
        assert_eq!(
            ix.resolve(&BookmarkSpec::After(vec![bm(1, 11)]), 3),
            Err(Reason::Other(BOOKMARK_NOT_FOUND.into()))
        );
        assert_eq!(
            ix.resolve(&BookmarkSpec::After(vec![bm(1, 12)]), 3)
                .unwrap()
                .unwrap()
                .first_lsn,
            4
        );
        assert_eq!(ix.resolve(&BookmarkSpec::Now, 1), Ok(None));
        assert_eq!(
            ix.resolve(&BookmarkSpec::Epoch, 1)
                .unwrap()
                .unwrap()
                .first_lsn,
            1
        );
        assert_eq!(
            ix.resolve(&BookmarkSpec::Epoch, 7)
                .unwrap()
                .unwrap()
                .first_lsn,
            7
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)))]

        /// The index answers exactly what a scan of every record would: the last record of the
        /// publisher with a sequence at or below the bookmark's.
        #[test]
        fn index_agrees_with_a_scan(
            steps in proptest::collection::vec((0u64..3, 1u64..4), 1..200),
            probe_pub in 0u64..3,
            probe_seq in 0u64..400,
        ) {
            let mut next_seq = [0u64; 3];
            let mut records = Vec::new();
            for (i, (p, gap)) in steps.iter().enumerate() {
                next_seq[*p as usize] += gap;
                records.push(((i + 1) as u64, bm(*p + 1, next_seq[*p as usize]), 0));
            }
            let ix = index(&records);
            let probe = bm(probe_pub + 1, probe_seq);
            let scan = records
                .iter()
                .filter(|(_, b, _)| b.publisher == probe.publisher && b.seq <= probe.seq)
                .map(|(lsn, _, _)| *lsn)
                .max();
            prop_assert_eq!(ix.position_of(probe), scan);
        }

        #[test]
        fn timestamps_round_trip(micros in 0u64..4_102_444_800_000_000) {
            prop_assert_eq!(parse_timestamp(&format_timestamp(micros)), Some(micros));
        }
    }
}
