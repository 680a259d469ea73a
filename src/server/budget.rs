//! The server-wide memory budget for connections' buffers.
//!
//! Each connection holds two buffers a peer controls: its input (a frame arriving, up to the
//! frame limit) and its output (acks the peer has not read yet, up to `max_unsent_bytes`).
//! Those per-connection limits alone still let many connections together take far more memory
//! than the machine has (1,024 connections times a 64 MiB frame), so every connection also
//! charges what it buffers to one [`MemoryBudget`] of `max_buffered_bytes`.
//!
//! A session reports its buffered bytes after every turn ([`Account::charge`]; a lock-free
//! add on the hot path). When the total passes the budget, the **largest consumers** are told
//! to close ([`Account::evicted`]), largest first, until what the others hold fits: the peers
//! hoarding memory go, the small ones (every normal client) stay, and the process never runs
//! out. A told session closes with `memory budget exceeded` and a logged reason; its charge
//! goes when it ends. The total can overshoot the budget by what sessions read in the turn
//! before they are told, at most about one socket buffer per connection reading at that moment.
//!
//! [`fit`] keeps a buffer's allocation near its use, so the charge (bytes held) stays honest:
//! an emptied buffer that grew for one large frame is given back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::Notify;

/// Above this capacity, an empty buffer is replaced by a small one.
const SHRINK_ABOVE: usize = 1 << 20;

/// The budget (see the module docs).
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    total: AtomicUsize,
    peak: AtomicUsize,
    disconnects: AtomicU64,
    next_id: AtomicU64,
    accounts: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// One connection's charge, shared between its [`Account`] and the budget's table.
#[derive(Debug, Default)]
struct Slot {
    bytes: AtomicUsize,
    evicted: AtomicBool,
    notify: Notify,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit: limit.max(1),
            total: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            disconnects: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            accounts: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens an account for a new connection.
    pub fn open(self: &Arc<Self>) -> Account {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        self.lock().insert(id, slot.clone());
        Account {
            id,
            budget: self.clone(),
            slot,
        }
    }

    /// Bytes charged now, across connections.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The highest total seen.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Connections told to close because the budget was exceeded.
    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }

    /// Tells the largest consumers to close until the rest fit the budget.
    fn enforce(&self) {
        let accounts = self.lock();
        let mut total = self.total.load(Ordering::Relaxed);
        let mut live: Vec<(usize, &Arc<Slot>)> = Vec::with_capacity(accounts.len());
        for slot in accounts.values() {
            let bytes = slot.bytes.load(Ordering::Relaxed);
            if slot.evicted.load(Ordering::Relaxed) {
                // Already told: what it holds is on its way out.
                total = total.saturating_sub(bytes);
            } else if bytes > 0 {
                live.push((bytes, slot));
            }
        }
        if total <= self.limit {
            return;
        }
        live.sort_unstable_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        for (bytes, slot) in live {
            if total <= self.limit {
                break;
            }
            slot.evicted.store(true, Ordering::Relaxed);
            slot.notify.notify_one();
            self.disconnects.fetch_add(1, Ordering::Relaxed);
            total = total.saturating_sub(bytes);
        }
    }
}

/// A connection's account in the budget; its charge is released when dropped.
#[derive(Debug)]
pub(crate) struct Account {
    id: u64,
    budget: Arc<MemoryBudget>,
    slot: Arc<Slot>,
}

impl Account {
    /// Sets what this connection buffers now. Past the budget, the largest consumers (maybe
    /// this one) are told to close.
    pub fn charge(&self, bytes: usize) {
        let before = self.slot.bytes.swap(bytes, Ordering::Relaxed);
        if bytes == before {
            return;
        }
        let total = if bytes > before {
            let grown = bytes - before;
            self.budget.total.fetch_add(grown, Ordering::Relaxed) + grown
        } else {
            let shrunk = before - bytes;
            self.budget.total.fetch_sub(shrunk, Ordering::Relaxed) - shrunk
        };
        self.budget.peak.fetch_max(total, Ordering::Relaxed);
        if total > self.budget.limit && bytes > before {
            self.budget.enforce();
        }
    }

    /// Resolves once this connection has been told to close (at once if it already was).
    pub async fn evicted(&self) {
        if self.slot.evicted.load(Ordering::Relaxed) {
            return;
        }
        self.slot.notify.notified().await;
    }

    /// What this connection has charged.
    pub fn charged(&self) -> usize {
        self.slot.bytes.load(Ordering::Relaxed)
    }

    /// The budget's limit.
    pub fn limit(&self) -> usize {
        self.budget.limit
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.charge(0);
        self.budget.lock().remove(&self.id);
    }
}

/// Keeps `buf`'s allocation near its use: an empty buffer above 1 MiB of capacity (left by one
/// large frame) is replaced by one of `want` bytes, and one below `want` grows to it.
pub(crate) fn fit(buf: &mut BytesMut, want: usize) {
    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE.max(want) {
        *buf = BytesMut::with_capacity(want);
    } else if buf.capacity() < want {
        buf.reserve(want - buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn told(a: &Account) -> bool {
        a.evicted().now_or_never().is_some()
    }

    #[test]
    fn the_largest_consumers_go_until_the_rest_fit() {
        let budget = Arc::new(MemoryBudget::new(100));
        let small = budget.open();
        let mid = budget.open();
        let big = budget.open();
        small.charge(10);
        mid.charge(40);
        big.charge(45);
        assert!(!told(&small) && !told(&mid) && !told(&big));
        // 10 + 40 + 60 = 110 > 100: the biggest goes, 50 remain.
        big.charge(60);
        assert!(told(&big));
        assert!(!told(&small) && !told(&mid));
        assert_eq!(budget.disconnects(), 1);
        // The small one growing past the budget with the big one still closing: the evicted
        // charge is already written off, so 10 + 40 + 45 fits... until it does not.
        small.charge(55);
        assert!(!told(&mid));
        small.charge(70);
        assert!(told(&small), "70 is now the largest not yet told");
        assert!(!told(&mid));
        assert_eq!(budget.peak(), 40 + 60 + 70);
        drop(big);
        drop(small);
        assert_eq!(budget.total(), 40);
        drop(mid);
        assert_eq!(budget.total(), 0);
        assert!(budget.lock().is_empty());
    }

    #[test]
    fn a_single_consumer_over_the_budget_goes() {
        let budget = Arc::new(MemoryBudget::new(10));
        let a = budget.open();
        a.charge(10);
        assert!(!told(&a));
        a.charge(11);
        assert!(told(&a));
        // Shrinking never tells anyone.
        let b = budget.open();
        b.charge(0);
        assert!(!told(&b));
    }

    #[test]
    fn fit_gives_back_emptied_large_buffers() {
        let mut buf = BytesMut::with_capacity(8 << 20);
        fit(&mut buf, 4096);
        assert!(buf.capacity() < 1 << 20);
        fit(&mut buf, 64 * 1024);
        assert!(buf.capacity() >= 64 * 1024);
        let mut held = BytesMut::with_capacity(8 << 20);
        held.extend_from_slice(b"partial frame");
        fit(&mut held, 4096);
        assert_eq!(&held[..], b"partial frame", "a buffer in use is left alone");
    }
}
