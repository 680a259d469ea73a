//! The file store's I/O thread (`amps-store-io`): every write to the store's directory after
//! `open` happens here, in the order the store submitted it.
//!
//! # The model
//!
//! The [`FileStore`](super::FileStore) the publish state machine calls is the *front*: it keeps
//! the messages in memory (authoritative for lookups and replay) and keeps a cheap clone of
//! each append (shared topic and body) for this thread, under the caller's lock, without
//! encoding anything or touching the disk. A group commit hands those messages to this thread
//! as one [`Cmd::Write`] and returns at once; the thread encodes and checksums the records,
//! reserves room, writes them at the end of the active segment, fsyncs it (unless the policy is `Never`),
//! starts a new segment when the active one is full, deletes segments whose messages are all
//! discarded (after rewriting `meta`), and then publishes the outcome: the durable watermark
//! (the ticket of the last finished write) in [`IoShared`], a condvar for the rare caller that
//! blocks, and the waker the store actor installed, which posts one message to its mailbox.
//!
//! Discard marks (acks) go through [`Cmd::Discard`], coalesced: the front raises a target and
//! queues at most one command, which carries the highest target when the thread gets to it.
//! A retraction (a write whose sync failed, never sent) is [`Cmd::Retract`]: the log is cut
//! back to where it stood after the last successful write.
//!
//! The queue is bounded by construction, not by a channel's capacity: at most one write is in
//! flight (the state machine starts the next group commit when the previous one resolved), at
//! most one discard is queued, and a retraction is only sent while no write is in flight. The
//! bytes of a write are messages the store already counts against its bounds.
//!
//! Ordering for recovery is the synchronous store's: one thread does every write in
//! submission order, so a crash leaves a prefix of the same operations. A discard record and
//! the `meta` rewrite only ever cover messages that were on disk before them (a message is
//! acknowledged only after it was sent, and a durable store sends only what a write made
//! durable).
//!
//! After a failed write the thread keeps the unwritten bytes (the next write retries them at
//! the same offset, positional writes) until a retraction drops them; meanwhile discards are
//! recorded but nothing is flushed, so a failed batch never reaches the disk behind the
//! store's back.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    create_segment, encode_message, encode_record, io_error, remove_if_present, reserve,
    write_all_at, write_error, FileStoreConfig, FsyncPolicy, Meta, Segment, PENDING_KEEP,
    RESERVE_STEP, SEGMENT_HEADER_LEN, TAG_DISCARD,
};
use crate::client::store::{StoredMessage, SyncWaker};
use crate::error::StoreError;

/// Work for the I/O thread.
pub(super) enum Cmd {
    /// Encode and append these messages (the highest sequence assigned so far is `last_seq`, 0
    /// if none is new), make them durable per the policy, and report the outcome under `ticket`.
    Write {
        msgs: Vec<StoredMessage>,
        last_seq: u64,
        ticket: u64,
    },
    /// Record the discard target in [`IoShared`].
    Discard,
    /// Cut the log back to the last successful write, drop what was not written, then buffer
    /// `kept` (messages that stay, highest sequence `kept_last`) for the next write.
    Retract {
        kept: Vec<StoredMessage>,
        kept_last: u64,
    },
}

/// The outcome of the last finished write.
#[derive(Default)]
pub(super) struct Done {
    pub ticket: u64,
    pub result: Option<Result<(), StoreError>>,
    /// The write's buffer, emptied, for the front to reuse.
    pub recycled: Option<Vec<StoredMessage>>,
}

/// What the front and the thread share.
#[derive(Default)]
pub(super) struct IoShared {
    /// The highest sequence the front ever assigned (for `meta`).
    pub last_assigned: AtomicU64,
    /// The highest discard mark the front asked for.
    pub discard_target: AtomicU64,
    /// A discard asked to be made durable now.
    pub discard_fsync: AtomicBool,
    /// A [`Cmd::Discard`] is queued and not yet picked up.
    pub discard_queued: AtomicBool,
    pub done: Mutex<Done>,
    pub done_cond: Condvar,
    pub waker: Mutex<Option<SyncWaker>>,
    /// Test hook: every reservation fails as on a full disk.
    #[cfg(test)]
    pub fail_reserve: AtomicBool,
    /// Test probe: the layout after the last command.
    #[cfg(test)]
    pub probe: Mutex<Probe>,
}

/// What tests may see of the thread's state.
#[cfg(test)]
#[derive(Clone, Debug, Default)]
pub(super) struct Probe {
    pub active_len: u64,
    pub active_path: std::path::PathBuf,
    pub allocated: u64,
    pub finished_last_seqs: Vec<u64>,
}

impl IoShared {
    pub(super) fn done(&self) -> MutexGuard<'_, Done> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, ticket: u64, result: Result<(), StoreError>, mut buf: Vec<StoredMessage>) {
        buf.clear();
        buf.shrink_to(PENDING_KEEP / std::mem::size_of::<StoredMessage>());
        {
            let mut done = self.done();
            done.ticket = ticket;
            done.result = Some(result);
            done.recycled = Some(buf);
        }
        self.done_cond.notify_all();
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(wake) = waker {
            wake();
        }
    }
}

/// Test hook for slow disks: every fsync of segment data waits this long first (nanoseconds;
/// 0: none). Process-wide, so only a test binary of its own should set it.
static FSYNC_DELAY_NS: AtomicU64 = AtomicU64::new(0);

/// Makes every later fsync of file-store segment data in this process wait `delay` first: a
/// slow disk, for tests of what does not wait for it. Not part of the API.
#[doc(hidden)]
pub fn set_fsync_delay_for_tests(delay: Duration) {
    FSYNC_DELAY_NS.store(delay.as_nanos() as u64, Ordering::SeqCst);
}

fn slow_disk() {
    let ns = FSYNC_DELAY_NS.load(Ordering::Relaxed);
    if ns > 0 {
        std::thread::sleep(Duration::from_nanos(ns));
    }
}

/// Where the log stood after the last successful write (or the open): what a retraction cuts
/// back to.
#[derive(Clone, Copy, Debug)]
struct Mark {
    segment: u64,
    len: u64,
    segment_last_seq: u64,
    last_discarded: u64,
}

impl Mark {
    /// The log as it stands: the end of `active`, discarded up to `discarded`.
    fn at(active: &Segment, discarded: u64) -> Mark {
        Mark {
            segment: active.id,
            len: active.len,
            segment_last_seq: active.last_seq,
            last_discarded: discarded,
        }
    }
}

/// The on-disk half of a file store, owned by the I/O thread (built by `open`, which recovers
/// the directory first).
pub(super) struct Disk {
    pub config: FileStoreConfig,
    /// Finished segments, oldest first.
    pub finished: VecDeque<Segment>,
    /// The segment appended to.
    pub active: Segment,
    /// The active segment's file, written at `active.len` (positional writes).
    pub file: File,
    /// Bytes reserved on disk for the active segment (its file length).
    pub allocated: u64,
    /// Encoded records not yet written to `file`.
    pub pending: Vec<u8>,
    /// Whether `file` has writes not yet fsynced.
    pub unsynced: bool,
    /// The highest discard mark encoded (written or buffered).
    pub discarded: u64,
    mark: Mark,
    /// The last write failed and no retraction came yet: flush nothing else.
    failed: bool,
    pub shared: Arc<IoShared>,
    /// Holds the directory's lock until the thread ends.
    pub _lock: File,
}

impl Disk {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: FileStoreConfig,
        finished: VecDeque<Segment>,
        active: Segment,
        file: File,
        allocated: u64,
        discarded: u64,
        shared: Arc<IoShared>,
        lock: File,
    ) -> Disk {
        let mark = Mark::at(&active, discarded);
        Disk {
            config,
            finished,
            active,
            file,
            allocated,
            pending: Vec::new(),
            unsynced: false,
            discarded,
            mark,
            failed: false,
            shared,
            _lock: lock,
        }
    }

    /// The thread's loop: runs until the front drops its sender.
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<Cmd>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::Write {
                    mut msgs,
                    last_seq,
                    ticket,
                } => {
                    let result = self.write(&msgs, last_seq);
                    // Dropped here, not on the caller's thread.
                    msgs.clear();
                    let buf = msgs;
                    #[cfg(test)]
                    self.probe();
                    self.shared.complete(ticket, result, buf);
                }
                Cmd::Discard => {
                    self.shared.discard_queued.store(false, Ordering::SeqCst);
                    let fsync = self.shared.discard_fsync.swap(false, Ordering::SeqCst);
                    let up_to = self.shared.discard_target.load(Ordering::SeqCst);
                    self.discard(up_to, fsync);
                    #[cfg(test)]
                    self.probe();
                }
                Cmd::Retract { kept, kept_last } => self.retract(&kept, kept_last),
            }
        }
    }

    /// Publishes the layout for tests (before the outcome, so a test that waited sees it).
    #[cfg(test)]
    pub(super) fn probe(&self) {
        *self.shared.probe.lock().unwrap() = Probe {
            active_len: self.active.len,
            active_path: self.active.path.clone(),
            allocated: self.allocated,
            finished_last_seqs: self.finished.iter().map(|s| s.last_seq).collect(),
        };
    }

    /// Encodes the records behind what is buffered (the checksums are computed here, off
    /// the caller's thread).
    fn encode(&mut self, msgs: &[StoredMessage]) -> Result<(), StoreError> {
        for msg in msgs {
            encode_record(&mut self.pending, |buf| encode_message(buf, msg))?;
        }
        Ok(())
    }

    fn write(&mut self, msgs: &[StoredMessage], last_seq: u64) -> Result<(), StoreError> {
        let start = self.pending.len();
        if let Err(e) = self.encode(msgs) {
            // Refused whole (the front checked each size, so not expected).
            self.pending.truncate(start);
            self.failed = true;
            return Err(e);
        }
        if last_seq > 0 {
            self.active.last_seq = self.active.last_seq.max(last_seq);
        }
        let result = self.reserve_for_pending().and_then(|()| self.flush());
        match &result {
            Ok(()) => {
                self.failed = false;
                self.mark = Mark::at(&self.active, self.discarded);
            }
            Err(_) => self.failed = true,
        }
        result
    }

    fn discard(&mut self, up_to: u64, fsync: bool) {
        if up_to > self.discarded {
            let start = self.pending.len();
            let encoded = encode_record(&mut self.pending, |buf| {
                buf.push(TAG_DISCARD);
                buf.extend_from_slice(&up_to.to_le_bytes());
            });
            if encoded.is_err() || self.reserve_for_pending().is_err() {
                // No room for the mark: reopening would bring those acknowledged messages
                // back, and the next logon discards them again (module docs). Not an error.
                self.pending.truncate(start);
                return;
            }
            self.discarded = up_to;
        }
        if self.failed {
            return;
        }
        if fsync || self.config.fsync == FsyncPolicy::Always {
            match self.flush() {
                Ok(()) => {
                    self.mark = Mark::at(&self.active, self.discarded);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publish store could not write a discard mark")
                }
            }
        }
        if let Err(e) = self.delete_discarded_segments() {
            tracing::warn!(error = %e, "publish store could not delete discarded segments");
        }
    }

    fn retract(&mut self, kept: &[StoredMessage], kept_last: u64) {
        self.failed = false;
        self.pending.clear();
        let mark = self.mark;
        if mark.segment != self.active.id {
            tracing::error!(
                path = %self.active.path.display(),
                "publish store cannot retract messages written to an earlier segment; a restart may replay them"
            );
        } else {
            // Cut everything after the mark: a batch written only half (positional writes leave
            // its bytes past `active.len`) and the reservation, made again below.
            if let Err(e) = self.file.set_len(mark.len) {
                tracing::error!(error = %io_error(&self.active.path)(e),
                    "publish store could not retract unsent writes from disk; a restart may replay them");
            }
            self.active.len = mark.len;
            self.allocated = mark.len;
            self.unsynced = true;
            self.active.last_seq = mark.segment_last_seq;
        }
        if let Err(e) = self.encode(kept) {
            tracing::error!(error = %e, "publish store could not write again the messages kept by a retract");
        }
        if kept_last > 0 {
            self.active.last_seq = self.active.last_seq.max(kept_last);
        }
        if self.discarded > mark.last_discarded {
            let discarded = self.discarded;
            let _ = encode_record(&mut self.pending, |buf| {
                buf.push(TAG_DISCARD);
                buf.extend_from_slice(&discarded.to_le_bytes());
            });
        }
        // No room now: the buffered records are still written at the next write, which
        // reports a full disk if it is still full.
        if let Err(e) = self.reserve_for_pending() {
            tracing::warn!(error = %e, "publish store could not reserve room after a retract");
        }
    }

    /// Writes the buffered records, fsyncs them unless the policy is `Never`, and starts a new
    /// segment if the active one is full.
    fn flush(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            // Positional, into reserved space: a write that fails half-way is written again
            // at the same offset by the next attempt.
            if let Err(e) = write_all_at(&self.file, &self.pending, self.active.len) {
                return Err(write_error(&self.active.path, e));
            }
            self.active.len += self.pending.len() as u64;
            self.pending.clear();
            self.pending.shrink_to(PENDING_KEEP);
            self.unsynced = self.config.fsync != FsyncPolicy::Never;
        }
        if self.unsynced {
            slow_disk();
            self.file.sync_data().map_err(io_error(&self.active.path))?;
            self.unsynced = false;
        }
        if self.active.len >= self.config.segment_bytes && self.active.len > SEGMENT_HEADER_LEN {
            // Give back the unused reservation first: a finished segment ends at its data, so
            // anything after its last record (zeros included) is damage, never a torn tail.
            if self.allocated > self.active.len {
                self.file
                    .set_len(self.active.len)
                    .map_err(io_error(&self.active.path))?;
                if self.config.fsync != FsyncPolicy::Never {
                    self.file.sync_all().map_err(io_error(&self.active.path))?;
                }
                self.allocated = self.active.len;
            }
            let next = create_segment(&self.config.dir, self.active.id + 1, self.config.fsync)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&next.path)
                .map_err(io_error(&next.path))?;
            self.file = file;
            self.allocated = next.len;
            let finished = std::mem::replace(&mut self.active, next);
            self.finished.push_back(finished);
            // It may hold nothing but discarded messages already.
            self.delete_discarded_segments()?;
        }
        Ok(())
    }

    /// Makes sure the disk has room for everything buffered, reserving ahead in steps of up to
    /// [`RESERVE_STEP`]. A full disk is [`StoreError::DiskFull`].
    fn reserve_for_pending(&mut self) -> Result<(), StoreError> {
        let need = self.active.len + self.pending.len() as u64;
        if need <= self.allocated {
            return Ok(());
        }
        let step = self.config.segment_bytes.clamp(4096, RESERVE_STEP);
        #[cfg(test)]
        if self.shared.fail_reserve.load(Ordering::SeqCst) {
            return Err(StoreError::DiskFull {
                path: self.active.path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        let result = reserve(&self.file, need + step).or_else(|_| reserve(&self.file, need));
        match result {
            Ok(()) => {
                self.allocated = self.allocated.max(need);
                if let Ok(m) = self.file.metadata() {
                    self.allocated = self.allocated.max(m.len());
                }
                Ok(())
            }
            Err(e) => Err(write_error(&self.active.path, e)),
        }
    }

    /// Deletes the finished segments whose messages are all discarded, after saving `meta`.
    pub(super) fn delete_discarded_segments(&mut self) -> Result<(), StoreError> {
        let mark = self.discarded;
        if self.finished.front().is_none_or(|s| s.last_seq > mark) {
            return Ok(());
        }
        Meta {
            last_assigned: self.shared.last_assigned.load(Ordering::SeqCst),
            last_discarded: mark,
        }
        .write(&self.config.dir)?;
        while let Some(segment) = self.finished.front() {
            if segment.last_seq > mark {
                break;
            }
            remove_if_present(&segment.path)?;
            self.finished.pop_front();
        }
        Ok(())
    }
}
