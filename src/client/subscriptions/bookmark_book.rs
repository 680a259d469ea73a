//! What a bookmark store knows about one subscription, and how it decides where a resumed
//! subscription starts. Pure logic: no I/O (persistence is `bookmark_store.rs`).
//!
//! # The model
//!
//! Every message from the server's transaction log carries a bookmark `<publisher>|<seq>|`:
//! the hash of the publishing client and that publisher's sequence number, which increases
//! along the log. A subscription receives messages in log order. The book keeps:
//!
//! - the **window**: every message delivered by this process and not yet known to be
//!   processed, in delivery order, each with a local number (1, 2, ... per subscription);
//! - per publisher, the **mark**: the highest sequence such that every message of that
//!   publisher delivered at or below it has been processed, and nothing delivered before it
//!   (of any publisher) is still unprocessed;
//! - per publisher, the sequences **processed out of order** above the mark (a subscriber that
//!   discards explicitly may finish message 7 before message 6).
//!
//! *Discarding* a message (its handler finished, or the application said so) marks it done in
//! the window; done messages at the front of the window leave it and raise their publisher's
//! mark. The front of the window is therefore the oldest unprocessed message, and every
//! mark names a message delivered before it.
//!
//! **Resuming** ([`SubscriptionBook::most_recent`]) sends the marks as a comma list. The
//! server starts right after the earliest listed message and, for each listed publisher,
//! delivers nothing at or below its mark (PROTOCOL.md section 12.3). Since every mark is
//! older than the oldest unprocessed message, nothing unprocessed is skipped; since every
//! publisher seen before that message is listed, nothing processed before it is repeated.
//! Messages processed out of order after it are redelivered by the server and dropped here
//! ([`SubscriptionBook::delivered`] says [`Duplicate`]), as is anything at or below what this
//! process already delivered (a replay overlapping a batch still in the subscriber's hands).
//!
//! With no mark at all (nothing processed yet), a resumed subscription uses the bookmark it
//! was placed with (EPOCH, a literal bookmark, a timestamp; or NOW, which can miss messages
//! published while it was down, and says so).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Parses a bookmark `<publisher>|<seq>|...` into its publisher and sequence; `None` for
/// anything else (such a message is delivered but cannot be tracked).
pub(crate) fn parse_bookmark(bm: &str) -> Option<(u64, u64)> {
    let mut parts = bm.split('|');
    let publisher = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    // The form always has the closing separator.
    parts.next()?;
    Some((publisher, seq))
}

/// A change to persist (the file store appends them; loading replays them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Forget everything (an explicit bookmark replaced the history).
    Reset,
    /// The publisher's mark rose to `seq`.
    Mark { publisher: u64, seq: u64 },
    /// `seq` was processed above the mark.
    Done { publisher: u64, seq: u64 },
}

/// A delivery that this subscription already had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Duplicate;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// `None` for a message without a usable bookmark (never affects marks).
    bookmark: Option<(u64, u64)>,
    done: bool,
}

/// One subscription's bookmark state (module docs).
#[derive(Debug, Default, Clone)]
pub(crate) struct SubscriptionBook {
    marks: BTreeMap<u64, u64>,
    done_above: HashMap<u64, BTreeSet<u64>>,
    window: VecDeque<Slot>,
    /// Local number of `window[0]`.
    front: u64,
    /// Per publisher, the highest sequence delivered by this process (window included).
    delivered_high: HashMap<u64, u64>,
}

impl SubscriptionBook {
    /// The local number the next delivery gets.
    fn next_local(&self) -> u64 {
        self.front.max(1) + self.window.len() as u64
    }

    /// Records a delivery; returns its local number, or [`Duplicate`] for a message this
    /// subscription already delivered or processed.
    pub fn delivered(&mut self, bookmark: Option<(u64, u64)>) -> Result<u64, Duplicate> {
        if let Some((p, s)) = bookmark {
            if self.is_duplicate(p, s) {
                return Err(Duplicate);
            }
            self.delivered_high.insert(p, s);
        }
        if self.front == 0 {
            self.front = 1;
        }
        let local = self.next_local();
        self.window.push_back(Slot {
            bookmark,
            done: false,
        });
        Ok(local)
    }

    fn is_duplicate(&self, p: u64, s: u64) -> bool {
        self.marks.get(&p).is_some_and(|m| s <= *m)
            || self.delivered_high.get(&p).is_some_and(|h| s <= *h)
            || self.done_above.get(&p).is_some_and(|d| d.contains(&s))
    }

    /// Marks delivery `local` processed; appends what changed to `changes`. Unknown or
    /// already processed numbers change nothing (returns false).
    pub fn discard(&mut self, local: u64, changes: &mut Vec<Change>) -> bool {
        let Some(i) = local.checked_sub(self.front) else {
            return false;
        };
        let Some(slot) = self.window.get_mut(i as usize) else {
            return false;
        };
        if slot.done {
            return false;
        }
        slot.done = true;
        if i > 0 {
            if let Some((p, s)) = slot.bookmark {
                self.done_above.entry(p).or_default().insert(s);
                changes.push(Change::Done {
                    publisher: p,
                    seq: s,
                });
            }
            return true;
        }
        let mut raised: BTreeMap<u64, u64> = BTreeMap::new();
        while self.window.front().is_some_and(|s| s.done) {
            let Some(slot) = self.window.pop_front() else {
                break;
            };
            self.front += 1;
            if let Some((p, s)) = slot.bookmark {
                let m = self.marks.entry(p).or_insert(s);
                *m = (*m).max(s);
                raised.insert(p, *m);
            }
        }
        for (p, m) in raised {
            if let Some(d) = self.done_above.get_mut(&p) {
                *d = d.split_off(&(m + 1));
                if d.is_empty() {
                    self.done_above.remove(&p);
                }
            }
            changes.push(Change::Mark {
                publisher: p,
                seq: m,
            });
        }
        true
    }

    /// Marks deliveries `first..=last` processed (a batch whose handler returned); the marks
    /// that rose are appended to `changes` once each.
    pub fn discard_range(&mut self, first: u64, last: u64, changes: &mut Vec<Change>) {
        let from = changes.len();
        for n in first..=last {
            self.discard(n, changes);
        }
        // Keep only the last mark of each publisher (a batch raises one many times).
        let mut seen = std::collections::HashSet::new();
        let mut tail: Vec<Change> = changes.drain(from..).rev().collect();
        tail.retain(|c| match c {
            Change::Mark { publisher, .. } => seen.insert(*publisher),
            _ => true,
        });
        changes.extend(tail.into_iter().rev());
    }

    /// Forgets deliveries numbered `local` and later, which never reached the subscriber (the
    /// connection dropped while they were queued; the server will send them again).
    pub fn forget_from(&mut self, local: u64) {
        let keep = local.saturating_sub(self.front.max(1)) as usize;
        if keep >= self.window.len() {
            return;
        }
        self.window.truncate(keep);
        self.delivered_high = self.marks.iter().map(|(p, s)| (*p, *s)).collect();
        for slot in &self.window {
            if let Some((p, s)) = slot.bookmark {
                let h = self.delivered_high.entry(p).or_insert(s);
                *h = (*h).max(s);
            }
        }
    }

    /// Deliveries not yet processed.
    pub fn outstanding(&self) -> usize {
        self.window.iter().filter(|s| !s.done).count()
    }

    /// The resume bookmark: every publisher's mark as `<publisher>|<mark>|`, comma separated;
    /// `None` when nothing has been processed.
    pub fn most_recent(&self) -> Option<String> {
        if self.marks.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .marks
            .iter()
            .map(|(p, s)| format!("{p}|{s}|"))
            .collect();
        Some(parts.join(","))
    }

    /// Applies a persisted change (loading a file).
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Reset => *self = SubscriptionBook::default(),
            Change::Mark { publisher, seq } => {
                let m = self.marks.entry(publisher).or_insert(seq);
                *m = (*m).max(seq);
                let m = *m;
                if let Some(d) = self.done_above.get_mut(&publisher) {
                    *d = d.split_off(&(m + 1));
                    if d.is_empty() {
                        self.done_above.remove(&publisher);
                    }
                }
            }
            Change::Done { publisher, seq } => {
                if self.marks.get(&publisher).is_none_or(|m| seq > *m) {
                    self.done_above.entry(publisher).or_default().insert(seq);
                }
            }
        }
    }

    /// The persistent part as changes (for compacting a file).
    pub fn snapshot(&self) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .marks
            .iter()
            .map(|(p, s)| Change::Mark {
                publisher: *p,
                seq: *s,
            })
            .collect();
        let mut done: Vec<(u64, u64)> = self
            .done_above
            .iter()
            .flat_map(|(p, d)| d.iter().map(move |s| (*p, *s)))
            .collect();
        done.sort_unstable();
        out.extend(done.into_iter().map(|(p, s)| Change::Done {
            publisher: p,
            seq: s,
        }));
        out
    }

    /// Whether there is anything worth persisting.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty() && self.done_above.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bookmarks_parse_strictly() {
        assert_eq!(parse_bookmark("12|7|"), Some((12, 7)));
        assert_eq!(parse_bookmark("12|7|20260101T000000Z"), Some((12, 7)));
        for bad in ["", "garbage", "12|7", "x|7|", "12||", "0"] {
            assert_eq!(parse_bookmark(bad), None, "{bad}");
        }
    }

    #[test]
    fn in_order_discards_raise_the_marks() {
        let mut b = SubscriptionBook::default();
        let mut ch = Vec::new();
        assert_eq!(b.delivered(Some((1, 10))), Ok(1));
        assert_eq!(b.delivered(Some((2, 5))), Ok(2));
        assert_eq!(b.delivered(None), Ok(3));
        assert_eq!(b.delivered(Some((1, 11))), Ok(4));
        assert_eq!(b.most_recent(), None);
        b.discard_range(1, 3, &mut ch);
        assert_eq!(b.most_recent().as_deref(), Some("1|10|,2|5|"));
        assert_eq!(b.outstanding(), 1);
        assert_eq!(
            b.delivered(Some((1, 11))),
            Err(Duplicate),
            "still in the window"
        );
        assert_eq!(b.delivered(Some((2, 5))), Err(Duplicate));
        assert!(!ch.iter().any(|c| matches!(c, Change::Done { .. })));
    }

    #[test]
    fn out_of_order_discards_wait_for_the_front() {
        let mut b = SubscriptionBook::default();
        let mut ch = Vec::new();
        for s in 1..=3 {
            b.delivered(Some((9, s))).expect("new");
        }
        assert!(b.discard(3, &mut ch));
        assert!(b.discard(2, &mut ch));
        assert_eq!(b.most_recent(), None, "1 is still unprocessed");
        assert!(!b.discard(2, &mut ch), "twice changes nothing");
        assert!(b.discard(1, &mut ch));
        assert_eq!(b.most_recent().as_deref(), Some("9|3|"));
        assert_eq!(
            ch.last(),
            Some(&Change::Mark {
                publisher: 9,
                seq: 3
            })
        );
        // A reloaded book holds what the changes said.
        let mut r = SubscriptionBook::default();
        for c in &ch {
            r.apply(*c);
        }
        assert_eq!(r.most_recent().as_deref(), Some("9|3|"));
        assert!(r.done_above.is_empty());
    }

    #[test]
    fn forgetting_undelivered_lets_them_come_again() {
        let mut b = SubscriptionBook::default();
        for s in 1..=4 {
            b.delivered(Some((9, s))).expect("new");
        }
        b.forget_from(3);
        assert_eq!(b.delivered(Some((9, 3))), Ok(3));
        assert_eq!(b.delivered(Some((9, 2))), Err(Duplicate));
    }

    /// A transaction log of messages from a few publishers, each publisher's sequences
    /// increasing along the log.
    fn log_strategy() -> impl Strategy<Value = Vec<(u64, u64)>> {
        proptest::collection::vec(0u64..3, 1..40).prop_map(|pubs| {
            let mut next = [0u64; 3];
            pubs.into_iter()
                .map(|p| {
                    next[p as usize] += 1 + p; // gaps: sequences need not be dense
                    (p, next[p as usize])
                })
                .collect()
        })
    }

    /// The server's rule for where a resumed subscription starts (PROTOCOL.md 12.3): right
    /// after the earliest listed message, skipping each listed publisher at or below its
    /// mark; from the start when nothing is listed (EPOCH).
    fn replay(log: &[(u64, u64)], list: Option<&str>) -> Vec<usize> {
        let Some(list) = list else {
            return (0..log.len()).collect();
        };
        let marks: HashMap<u64, u64> = list.split(',').filter_map(parse_bookmark).collect();
        let start = log
            .iter()
            .position(|(p, s)| marks.get(p) == Some(s))
            .map_or(0, |i| i + 1);
        (start..log.len())
            .filter(|&i| {
                let (p, s) = log[i];
                marks.get(&p).is_none_or(|m| s > *m)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
        ))]

        /// Under any order of discards, crashes (the book reloaded from its persisted changes,
        /// the window lost) and reconnects (queued deliveries forgotten, resumed from
        /// most_recent by the server's rule): every message is processed exactly once.
        #[test]
        fn exactly_once_across_crashes_and_resumes(
            log in log_strategy(),
            ops in proptest::collection::vec((0u8..6, any::<prop::sample::Index>()), 0..200),
        ) {
            let mut persisted: Vec<Change> = Vec::new();
            let mut book = SubscriptionBook::default();
            // What the server is sending on this connection: log indexes, in order.
            let mut stream: VecDeque<usize> = (0..log.len()).collect();
            // Routed to the subscription, not yet handed to the subscriber: (local, index).
            let mut queued: VecDeque<(u64, usize)> = VecDeque::new();
            // In the subscriber's hands, not yet processed.
            let mut held: Vec<(u64, usize)> = Vec::new();
            let mut processed = vec![0u32; log.len()];
            let mut changes = Vec::new();
            let mut process = |book: &mut SubscriptionBook, (local, i): (u64, usize),
                               processed: &mut Vec<u32>, persisted: &mut Vec<Change>| {
                processed[i] += 1;
                changes.clear();
                let known = book.discard(local, &mut changes);
                persisted.extend_from_slice(&changes);
                known
            };
            for (op, pick) in ops {
                match op {
                    0 => if let Some(i) = stream.pop_front() {
                        if let Ok(local) = book.delivered(Some(log[i])) {
                            queued.push_back((local, i));
                        }
                    },
                    1 => if let Some(d) = queued.pop_front() { held.push(d) },
                    2 | 5 => if !held.is_empty() {
                        let k = if op == 5 { 0 } else { pick.index(held.len()) };
                        let d = held.remove(k);
                        prop_assert!(process(&mut book, d, &mut processed, &mut persisted));
                    },
                    3 => {
                        book = SubscriptionBook::default();
                        for c in &persisted { book.apply(*c); }
                        held.clear();
                        queued.clear();
                        stream = replay(&log, book.most_recent().as_deref()).into();
                    }
                    _ => {
                        if let Some((local, _)) = queued.front() {
                            book.forget_from(*local);
                        }
                        queued.clear();
                        stream = replay(&log, book.most_recent().as_deref()).into();
                    }
                }
            }
            // Drain: everything still coming is delivered and processed in order.
            loop {
                for d in std::mem::take(&mut held) {
                    prop_assert!(process(&mut book, d, &mut processed, &mut persisted));
                }
                held.extend(queued.drain(..));
                if held.is_empty() {
                    match stream.pop_front() {
                        Some(i) => if let Ok(local) = book.delivered(Some(log[i])) {
                            held.push((local, i));
                        },
                        None => break,
                    }
                }
            }
            prop_assert!(processed.iter().all(|n| *n == 1), "processed counts {:?}", processed);
        }

        /// A batch discard raises the same marks as discarding one by one, with one mark
        /// change per publisher.
        #[test]
        fn range_discard_is_one_by_one(log in log_strategy(), cut in any::<prop::sample::Index>()) {
            let mut a = SubscriptionBook::default();
            let mut b = SubscriptionBook::default();
            for bm in &log {
                a.delivered(Some(*bm)).expect("new");
                b.delivered(Some(*bm)).expect("new");
            }
            let last = 1 + cut.index(log.len()) as u64;
            let (mut ca, mut cb) = (Vec::new(), Vec::new());
            a.discard_range(1, last, &mut ca);
            for n in 1..=last { b.discard(n, &mut cb); }
            prop_assert_eq!(a.most_recent(), b.most_recent());
            let pubs: BTreeSet<u64> = ca.iter().filter_map(|c| match c { Change::Mark { publisher, .. } => Some(*publisher), _ => None }).collect();
            prop_assert_eq!(pubs.len(), ca.len());
        }
    }
}
