//! The maintenance thread: snapshots and retention, off the write path.
//!
//! Every quarter second it looks at how much was logged since the last snapshot; past
//! `snapshot_every` it copies the SOW and the sequence table under the state lock (record
//! bodies are shared, not copied), waits until the log is durable up to that LSN, and writes
//! the snapshot without the lock ([`snapshot`](super::txlog::snapshot)). Then it applies
//! retention: finished segments covered by the older of the two kept snapshots, held by no
//! reader, and unwanted by the policy are removed.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::Shared;
use super::txlog::format::now_us;
use super::txlog::retention::apply_retention;
use super::txlog::snapshot::{list_snapshots, prune_snapshots, write_snapshot, SnapshotData};
use crate::error::ServerError;

const TICK: Duration = Duration::from_millis(250);

/// Runs until `stop` is dropped or sent to.
pub(crate) fn maintenance_loop(shared: Arc<Shared>, dir: PathBuf, stop: mpsc::Receiver<()>) {
    let mut logged_at_snapshot = shared.log_segments.written();
    let mut failing = false;
    loop {
        match stop.recv_timeout(TICK) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let logged = shared.log_segments.written();
        if logged.saturating_sub(logged_at_snapshot) >= shared.settings.snapshot_every {
            match take_snapshot(&shared, &dir) {
                Ok(Some(path)) => {
                    logged_at_snapshot = logged;
                    failing = false;
                    tracing::debug!(path = %path.display(), "snapshot written");
                }
                Ok(None) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot write a snapshot; retrying (log segments are kept meanwhile)");
                    }
                    failing = true;
                }
            }
        }
        if let Err(e) = retain(&shared, &dir) {
            tracing::warn!(error = %e, "log retention failed");
        }
    }
}

/// Writes a snapshot of the current state; `None` if the log did not become durable in time.
pub(crate) fn take_snapshot(
    shared: &Shared,
    dir: &std::path::Path,
) -> Result<Option<PathBuf>, ServerError> {
    let _one_at_a_time = shared
        .snapshot_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let data = {
        let st = shared.lock();
        SnapshotData {
            lsn: st.last_lsn,
            timestamp_us: st.last_ts,
            last_seq: st.last_seq.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            records: st
                .sow
                .all_records()
                .map(|(t, k, v)| (t.to_owned(), k.to_owned(), v.clone()))
                .collect(),
        }
    };
    // Never ahead of the log: wait (bounded) until everything it covers is durable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while *shared.durable.borrow() < data.lsn {
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if list_snapshots(dir)?.last().is_some_and(|s| s.0 >= data.lsn) {
        return Ok(None);
    }
    let path = write_snapshot(dir, &data)?;
    prune_snapshots(dir, 2)?;
    Ok(Some(path))
}

/// Applies the retention policy (module docs).
fn retain(shared: &Shared, dir: &std::path::Path) -> Result<(), ServerError> {
    let snaps = list_snapshots(dir)?;
    // The older of the two kept snapshots: what a damaged newest one would fall back on.
    let covered = match snaps.len() {
        0 | 1 => return Ok(()),
        n => snaps[n - 2].0,
    };
    let removed = apply_retention(
        &shared.log_segments,
        &shared.log_holds,
        shared.settings.retain,
        covered,
        now_us(),
    )?;
    if let (Some(first), Some(last)) = (removed.first(), removed.last()) {
        tracing::debug!(
            segments = removed.len(),
            from_lsn = first.first_lsn,
            to_lsn = last.last_lsn,
            "log segments removed by retention"
        );
    }
    Ok(())
}
