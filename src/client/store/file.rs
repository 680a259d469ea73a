//! `FileStore`: a publish store that survives the client process.
//!
//! # Model
//!
//! The unacknowledged messages live in memory, in a [`MemoryStore`] that does lookup, replay
//! order and accounting. Every change is also appended to a log of segment files in one
//! directory, and reopening the directory rebuilds the memory store from that log.
//!
//! ```text
//! <dir>/LOCK                          held with an exclusive lock while open; holds the pid
//! <dir>/meta                          last assigned + last discarded, written when segments go
//! <dir>/00000000000000000001.seg      oldest segment
//! <dir>/00000000000000000002.seg      ...
//! <dir>/0000000000000000000N.seg      the active segment: the only one written to
//! ```
//!
//! A segment is the 8-byte magic `AMPSSEG\x01` followed by records. A record is
//!
//! ```text
//! len: u32 LE | crc: u32 LE (CRC-32 of the payload) | payload: len bytes
//! ```
//!
//! and its payload is either a message or a discard mark:
//!
//! ```text
//! message:  op: u8 (1 publish, 2 delta_publish, 3 sow_delete) | seq: u64 LE | flags: u8
//!           | topic | data | [correlation id] | [expiration] | [sow key] | [filter] | [sow keys]
//! discard:  0x10 | up_to: u64 LE
//! ```
//!
//! where `topic`, `data` and the optional strings are a LEB128 length then the bytes, the
//! expiration is a LEB128 number, and `flags` says which optional fields follow (bit 0: the
//! message has options at all, bits 1 to 5: correlation id, expiration, sow key, filter, sow
//! keys). On reload, consecutive messages to the same topic share one `Arc<str>`.
//!
//! [`Store::discard_up_to`] appends a discard mark, so an acknowledgement costs a few bytes in the
//! same group commit as the publishes, not a file rewrite. Once a segment is finished (it reached
//! [`FileStoreConfig::segment_bytes`]; the next records go to a new one) and every message in it
//! is discarded, the segment file is deleted; the active segment never is. Before deleting, the
//! store writes the `meta` file (temp file, fsync, rename, fsync of the directory) with the
//! highest sequence ever assigned and the discard mark, because the deleted segments may have
//! held the only record of either. So under a steady acknowledged load the directory stays
//! bounded: the segments holding unacknowledged messages plus the active one, roughly the
//! unacknowledged bytes plus two segments. After reopening, numbering continues after the highest
//! sequence ever assigned and messages at or below the discard mark stay discarded, even if every
//! segment that held them is gone.
//!
//! # The I/O thread
//!
//! After [`FileStore::open`] (which recovers the directory on the caller's thread), every
//! write to the directory happens on one thread per store, `amps-store-io`, in the order the
//! store handed it over: segment appends, fsyncs, new segments, `meta` rewrites and segment
//! deletions. [`Store::append`] only keeps a clone of the message (shared topic and body) for
//! the thread, which encodes and checksums the records: no disk I/O and no encoding on the
//! caller's thread, so the publish store's lock and the actor thread never wait for the disk.
//! The in-memory index answers every lookup and replay. A group commit
//! ([`Store::start_sync`]) hands the batch to the thread and returns at once; the thread
//! encodes, writes and fsyncs it, records the outcome (the durable watermark) and calls the
//! waker the store actor installed, which delivers it as one mailbox message
//! ([`Store::poll_sync`]). [`Store::sync`] is the blocking form, for callers that want to wait
//! (tests, tools, shutdown). The hand-over is bounded by the store's own bounds: one batch in
//! flight, at most one coalesced discard, and a batch only holds messages the store already
//! counts (clones share their bodies). Dropping the store lets the thread finish what it was
//! handed, then joins it (the thread holds the directory's lock, so a reopen after the drop
//! sees every finished write). See `file/writer.rs`.
//!
//! # Durability: [`FsyncPolicy`]
//!
//! A message is on disk once the sync that follows its `append` completed, under every policy;
//! until then it is only in memory, and a crash (or dropping the store without a sync) loses
//! it. The publish store answers and sends a write only after that, so nothing reported stored
//! is lost.
//!
//! - [`Batch`](FsyncPolicy::Batch) (the default): the thread writes each handed-over batch and
//!   fsyncs it once (group commit: one fsync for everything admitted while the previous one
//!   ran). Discard marks are written with the next batch.
//! - [`Always`](FsyncPolicy::Always): as `Batch` for messages (each is on disk before it is
//!   answered; consecutive messages share an fsync), and every discard mark is written and
//!   fsynced as it comes.
//! - [`Never`](FsyncPolicy::Never): like `Batch`, but segment data is only written to the
//!   operating system, never fsynced. A message survives a crash of the process once its sync
//!   completed, but not a power loss or a crash of the operating system, which may also leave a
//!   damaged record in a finished segment, which the next open reports as
//!   [`StoreError::Corrupt`].
//!
//! The rare structural writes are fsynced under every policy: the `meta` file and a tail cut off
//! during recovery. A new segment's header and directory entry are fsynced under `Always` and
//! `Batch`, as is the finished segment before it. A discard mark is durable at the same point as
//! an append; if one is lost in a crash, reopening brings those acknowledged messages back
//! (unless `meta` already covers them); the next logon's last sequence covers them, so the
//! client discards them again without resending: that costs a little work, never correctness.
//! Dropping the store writes nothing that was not handed to the thread, as a crash would: call
//! `sync` first for a clean shutdown.
//!
//! Recovery sees a prefix of the same operations as a synchronous store would have done,
//! because one thread does them all in order: a crash between a `meta` rewrite and a later
//! append loses only the append (never answered), and a discard mark or `meta` only ever covers
//! messages that were on disk before it (a message is acknowledged only after it was sent, and
//! it is sent only once its sync completed).
//!
//! # Recovery
//!
//! [`FileStore::open`] reads every segment in order, applying messages and discard marks, and
//! skips every message at or below the discard mark. A record is good when its length fits,
//! its CRC matches and its payload decodes. Bad bytes are judged by what follows them:
//!
//! - at the end of the *last* segment with no good record after them, they are a *torn tail*
//!   (a crash in the middle of a write, never reported stored): cut off quietly (one `info`
//!   line), and appends continue after the last good record. Zeros there are just the space
//!   reserved for appends;
//! - anything else — bad bytes with a good record after them (in any segment), any bad or zero
//!   bytes in a finished segment, a record whose CRC matches but whose payload does not
//!   decode — is damage: data the store promised. `open` fails with [`StoreError::Corrupt`]
//!   naming the file, the offset and how many intact records lie beyond, and nothing is cut.
//!
//! [`FileStore::verify`] (`actix-amps store --dir DIR --verify`) lists every damaged range with
//! the records before and after it, the sequences still readable in it and the unacknowledged
//! messages lost. [`FileStore::repair`] (`--repair`) copies each damaged range to
//! `DIR/quarantine/` and rewrites the segment with every intact record on both sides
//! (temporary file, fsync, rename, directory fsync); the lost messages are never replayed, and
//! the report says which they were.
//!
//! A last segment too short to hold its header (created just before a crash) gets its header
//! rewritten. Lengths are checked against the bytes left in the file before anything is
//! allocated, so a corrupt length never causes a large allocation.
//!
//! # A full disk
//!
//! Disk space for the active segment is reserved ahead of the data (`posix_fallocate` on
//! Linux, in steps of up to 1 MiB) by the I/O thread before it writes a batch. When no space
//! can be reserved, the sync fails with [`StoreError::DiskFull`] (the segment's path and the OS
//! error) and nothing of the batch is written: the publish store retracts the batch and refuses
//! its writes, so the client never sends them. The next batch tries again, so writes resume by
//! themselves once space is freed. Writes into reserved space cannot run out of room
//! (elsewhere than Linux the space is not truly reserved, and a full disk shows up when the
//! batch is written, as `DiskFull` too). A finished segment gives its unused reservation back
//! (it is cut to its data).
//!
//! # Locking
//!
//! `open` takes an exclusive lock on `LOCK` (`File::try_lock`) and writes its pid there; a second
//! `open` of the same directory, from this or another process, fails with
//! [`StoreError::Locked`] naming that pid. The lock goes when the store is dropped, or with the
//! process. The `LOCK` file itself stays.
//!
//! # Errors
//!
//! An append refused as [`StoreError::SequenceNotIncreasing`] or [`StoreError::TooLarge`]
//! leaves the store unchanged. After a [`StoreError::Io`] or [`StoreError::DiskFull`] from a
//! sync, the messages are still held in memory (the store never forgets a message it accepted)
//! but are not known to be on disk: the thread keeps the unwritten bytes, and nothing else is
//! flushed until either the next sync writes them again at the same offset (positional writes)
//! or [`Store::retract`] drops them and cuts the log back to the last successful write (what the
//! publish store does).
//!
//! # Limits
//!
//! One record's payload is at most `u32::MAX` bytes; a larger message is refused with
//! [`StoreError::TooLarge`].

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use bytes::Bytes;

use super::{MemoryStore, MessageOptions, Operation, Store, StoredMessage, SyncStart, SyncWaker};
use crate::error::StoreError;

mod writer;
#[doc(hidden)]
pub use writer::set_fsync_delay_for_tests;

/// When a [`FileStore`] forces its writes to stable storage. See the [module docs](self) for
/// exactly what each policy survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// As `Batch` for messages (each on disk before it is answered), and every discard mark is
    /// fsynced as it comes.
    Always,
    /// Buffer appends; the I/O thread writes and fsyncs them together at each sync (group
    /// commit): on disk when the following sync completes.
    #[default]
    Batch,
    /// Buffer appends; the I/O thread writes them at each sync without fsync: survives a
    /// process crash once the sync completes, not a power loss.
    Never,
}

/// Where and how a [`FileStore`] keeps its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStoreConfig {
    /// The store's directory, created if absent. One client (one client name) per directory.
    pub dir: PathBuf,
    /// When writes are fsynced. Default [`FsyncPolicy::Batch`].
    pub fsync: FsyncPolicy,
    /// A segment is finished and a new one started once it holds at least this many bytes.
    /// Smaller segments free disk space sooner after acknowledgements, at the cost of more files.
    /// Default [`FileStoreConfig::DEFAULT_SEGMENT_BYTES`].
    pub segment_bytes: u64,
}

impl FileStoreConfig {
    /// The default segment size: 64 MiB.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

    /// A configuration for `dir` with the default fsync policy and segment size.
    pub fn new(dir: impl Into<PathBuf>) -> FileStoreConfig {
        FileStoreConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            segment_bytes: FileStoreConfig::DEFAULT_SEGMENT_BYTES,
        }
    }
}

const SEGMENT_MAGIC: &[u8; 8] = b"AMPSSEG\x01";
const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;
const SEGMENT_SUFFIX: &str = ".seg";
const RECORD_HEADER_LEN: u64 = 8;

const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta";
const META_TMP_FILE: &str = "meta.tmp";
const META_MAGIC: &[u8; 8] = b"AMPSMTA\x01";
/// Magic, last assigned, last discarded, CRC-32 of the preceding bytes.
const META_LEN: usize = 8 + 8 + 8 + 4;

const TAG_DISCARD: u8 = 0x10;
const HAS_OPTIONS: u8 = 1 << 0;
const HAS_CORRELATION_ID: u8 = 1 << 1;
const HAS_EXPIRATION: u8 = 1 << 2;
const HAS_SOW_KEY: u8 = 1 << 3;
const HAS_FILTER: u8 = 1 << 4;
const HAS_SOW_KEYS: u8 = 1 << 5;
const ALL_FLAGS: u8 = (1 << 6) - 1;

/// Disk space is reserved ahead of the data in steps of at most this many bytes (or the
/// segment size, if smaller).
const RESERVE_STEP: u64 = 1 << 20;

/// A write buffer's capacity is cut back to this after an unusually large batch.
const PENDING_KEEP: usize = 4 << 20;

/// A durable publish store: a [`MemoryStore`] backed by an append-only log of segment files,
/// written by a thread of its own. See the [module docs](self) for the on-disk layout, the I/O
/// thread and what each [`FsyncPolicy`] guarantees.
pub struct FileStore {
    config: FileStoreConfig,
    mem: MemoryStore,
    /// Messages appended and not yet handed to the I/O thread (which encodes them: cheap
    /// clones here, no encoding or checksum on the caller's thread).
    pending: Vec<StoredMessage>,
    /// An emptied buffer the I/O thread gave back: the next `pending`, so that a batch does not
    /// grow a new allocation from nothing.
    spare: Vec<StoredMessage>,
    /// The highest sequence handed to the I/O thread.
    submitted_seq: u64,
    /// The highest sequence a successful write covered.
    durable_seq: u64,
    /// The write in flight: its ticket and the highest sequence it carries.
    in_flight: Option<(u64, u64)>,
    next_ticket: u64,
    io: Arc<writer::IoShared>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<writer::Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    /// Bytes written to the file (header included; buffered records not included).
    len: u64,
    /// The highest message sequence in the segment (buffered records included), 0 if none.
    last_seq: u64,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("config", &self.config)
            .field("messages", &self.mem.len())
            .field("last_assigned", &self.mem.last_assigned())
            .field("last_discarded", &self.mem.last_discarded())
            .field("pending_messages", &self.pending.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl FileStore {
    /// Opens (creating if needed) the store in `config.dir`, recovering every unacknowledged
    /// message in sequence order, locks the directory and starts the store's I/O thread.
    ///
    /// Errors: [`StoreError::Locked`] if another store has the directory open,
    /// [`StoreError::Corrupt`] for damage that is not a torn tail of the last segment,
    /// [`StoreError::Io`] if a file cannot be read or written (or the thread not started).
    pub fn open(config: FileStoreConfig) -> Result<FileStore, StoreError> {
        let dir = config.dir.as_path();
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = lock_dir(dir)?;

        remove_if_present(&dir.join(META_TMP_FILE))?;
        let meta = Meta::read(&dir.join(META_FILE))?;

        let mut mem = MemoryStore::resume(0, meta.last_discarded);
        let mut mark = meta.last_discarded;
        let mut highest = meta.last_assigned;
        let mut prev_topic = None;
        let mut segments = VecDeque::new();
        let ids = list_segments(dir)?;
        for (i, &id) in ids.iter().enumerate() {
            let path = segment_path(dir, id);
            let mut last_seq = 0;
            let scanned = scan_segment(&path, i + 1 == ids.len(), &mut prev_topic, |record| {
                match record {
                    Record::Message(msg) => {
                        last_seq = msg.seq;
                        highest = highest.max(msg.seq);
                        if msg.seq > mark {
                            mem.append(msg).map_err(|e| e.to_string())?;
                        }
                    }
                    Record::Discard(up_to) => {
                        mark = mark.max(up_to);
                        mem.discard_up_to(up_to).map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            });
            let len = match scanned {
                Ok(len) => len,
                Err(StoreError::Corrupt {
                    path,
                    offset,
                    what,
                    records_beyond,
                }) => {
                    // Count what the later segments still hold, for the error.
                    let mut later = 0;
                    for &next in &ids[i + 1..] {
                        let last = Some(&next) == ids.last();
                        later += verify_segment(&segment_path(dir, next), last)?.good.len() as u64;
                    }
                    return Err(StoreError::Corrupt {
                        path,
                        offset,
                        what,
                        records_beyond: records_beyond + later,
                    });
                }
                Err(e) => return Err(e),
            };
            segments.push_back(Segment {
                id,
                path,
                len,
                last_seq,
            });
        }
        mem.advance_last_assigned(highest);

        let active = match segments.pop_back() {
            Some(segment) => segment,
            None => create_segment(dir, 1, config.fsync)?,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&active.path)
            .map_err(io_error(&active.path))?;
        let allocated = file.metadata().map_err(io_error(&active.path))?.len();
        let shared = Arc::new(writer::IoShared::default());
        shared
            .last_assigned
            .store(mem.last_assigned(), Ordering::SeqCst);
        shared
            .discard_target
            .store(mem.last_discarded(), Ordering::SeqCst);
        let mut disk = writer::Disk::new(
            config.clone(),
            segments,
            active,
            file,
            allocated,
            mem.last_discarded(),
            shared.clone(),
            lock,
        );
        disk.delete_discarded_segments()?;
        #[cfg(test)]
        disk.probe();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("amps-store-io".into())
            .spawn(move || disk.run(rx))
            .map_err(io_error(dir))?;
        let durable = mem.last_assigned();
        Ok(FileStore {
            config,
            mem,
            pending: Vec::new(),
            spare: Vec::new(),
            submitted_seq: durable,
            durable_seq: durable,
            in_flight: None,
            next_ticket: 1,
            io: shared,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    fn send(&self, cmd: writer::Cmd) {
        self.io
            .last_assigned
            .fetch_max(self.mem.last_assigned(), Ordering::SeqCst);
        if let Some(tx) = &self.tx {
            // The thread ends only when this sender is dropped (or it panicked: then the
            // write's outcome never comes, and `wait_sync` reports it).
            let _ = tx.send(cmd);
        }
    }

    /// Takes the outcome of the write in flight if it is there (`block`: waits for it).
    fn take_outcome(&mut self, block: bool) -> Option<Result<(), StoreError>> {
        let (ticket, last) = self.in_flight?;
        let mut done = self.io.done();
        while done.ticket != ticket {
            if !block {
                return None;
            }
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                drop(done);
                self.in_flight = None;
                return Some(Err(io_error(&self.config.dir)(io::Error::other(
                    "the publish store's I/O thread ended",
                ))));
            }
            let (d, _) = self
                .io
                .done_cond
                .wait_timeout(done, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner());
            done = d;
        }
        let result = done.result.take().unwrap_or(Ok(()));
        if let Some(buf) = done.recycled.take() {
            if buf.capacity() > self.spare.capacity() {
                self.spare = buf;
            }
        }
        drop(done);
        self.in_flight = None;
        if result.is_ok() {
            self.durable_seq = self.durable_seq.max(last);
        }
        Some(result)
    }

    /// Test probe: the I/O thread's layout after its last write or discard.
    #[cfg(test)]
    fn probe(&self) -> writer::Probe {
        self.io.probe.lock().unwrap().clone()
    }

    /// Test hook: every reservation fails (`true`) as on a full disk, or none (`false`).
    #[cfg(test)]
    fn fail_reserve(&self, fail: bool) {
        self.io.fail_reserve.store(fail, Ordering::SeqCst);
    }

    fn queue_discard(&self, up_to: u64, fsync: bool) {
        self.io.discard_target.fetch_max(up_to, Ordering::SeqCst);
        if fsync {
            self.io.discard_fsync.store(true, Ordering::SeqCst);
        }
        if !self.io.discard_queued.swap(true, Ordering::SeqCst) {
            self.send(writer::Cmd::Discard);
        }
    }

    fn discard(&mut self, up_to: u64, fsync: bool) -> Result<usize, StoreError> {
        let raised = up_to > self.mem.last_discarded();
        let n = self.mem.discard_up_to(up_to)?;
        if raised || fsync {
            self.queue_discard(self.mem.last_discarded(), fsync);
        }
        Ok(n)
    }
}

impl Drop for FileStore {
    /// Lets the I/O thread finish what was handed to it, then waits for it to end (it holds
    /// the directory's lock): a store reopened after the drop sees every finished write.
    /// What was never handed over (appends since the last sync) is lost, as in a crash.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                let dir = self.config.dir.display();
                tracing::error!(%dir, "the publish store's I/O thread panicked");
            }
        }
    }
}

impl Store for FileStore {
    /// Keeps the message for the next sync, which hands it to the I/O thread (no disk I/O, no
    /// encoding here).
    fn append(&mut self, msg: StoredMessage) -> Result<(), StoreError> {
        let size = message_payload_len(&msg);
        if u32::try_from(size).is_err() {
            return Err(StoreError::TooLarge {
                size,
                max_bytes: u32::MAX as usize,
            });
        }
        self.mem.push(&msg)?;
        self.pending.push(msg);
        Ok(())
    }

    /// Hands everything appended to the I/O thread and waits until it is durable.
    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(r) = self.take_outcome(true) {
            r?;
        }
        match self.start_sync() {
            SyncStart::Done(r) => r,
            SyncStart::Started => self.take_outcome(true).unwrap_or(Ok(())),
        }
    }

    fn start_sync(&mut self) -> SyncStart {
        if self.in_flight.is_some() {
            return SyncStart::Started;
        }
        let buf = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
        let last = self.mem.last_assigned().max(self.submitted_seq);
        let last_seq = if last > self.submitted_seq { last } else { 0 };
        self.submitted_seq = last;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight = Some((ticket, last));
        self.send(writer::Cmd::Write {
            msgs: buf,
            last_seq,
            ticket,
        });
        SyncStart::Started
    }

    fn poll_sync(&mut self) -> Option<Result<(), StoreError>> {
        self.take_outcome(false)
    }

    fn wait_sync(&mut self) -> Option<Result<(), StoreError>> {
        self.take_outcome(true)
    }

    fn set_sync_waker(&mut self, waker: SyncWaker) {
        *self.io.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker);
    }

    /// Forgets the messages `>= from`. Messages not yet handed to the I/O thread are dropped
    /// from the buffer; messages handed over (a write whose sync failed) are cut from the log
    /// by the thread, back to the last successful write, and what stays after that point is
    /// written again. Numbering is not rewound.
    fn retract(&mut self, from: u64) -> Result<usize, StoreError> {
        if self.in_flight.is_some_and(|(_, last)| from <= last) {
            // Not done by the publish state machine (it retracts a failed write only after its
            // outcome); settle the write first so the cut is well defined.
            let _ = self.take_outcome(true);
        }
        let n = self.mem.retract(from)?;
        if n == 0 {
            return Ok(0);
        }
        if from > self.submitted_seq {
            // Only buffered messages.
            self.pending.retain(|m| m.seq < from);
            return Ok(n);
        }
        self.pending.clear();
        let kept: Vec<StoredMessage> = self
            .mem
            .iter_from(self.durable_seq.saturating_add(1))
            .map(StoredMessage::from)
            .collect();
        let kept_last = kept.last().map_or(0, |m| m.seq);
        self.submitted_seq = self.durable_seq.max(kept_last);
        self.send(writer::Cmd::Retract { kept, kept_last });
        Ok(n)
    }

    fn is_durable(&self) -> bool {
        true
    }

    /// Discards in memory at once; the discard mark (and deleting segments it empties) is the
    /// I/O thread's.
    fn discard_up_to(&mut self, up_to: u64) -> Result<usize, StoreError> {
        self.discard(up_to, false)
    }

    fn discard_durably(&mut self, up_to: u64) -> Result<usize, StoreError> {
        self.discard(up_to, true)
    }

    reads_from_memory!(mem);

    /// Every policy: appends reach the disk only through a sync (group commit on the I/O
    /// thread).
    fn needs_sync(&self) -> bool {
        true
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, offset: u64, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        what: what.into(),
        records_beyond: 0,
    }
}

/// A write error: [`StoreError::DiskFull`] when the disk (or a file size limit, or a quota)
/// has no room, [`StoreError::Io`] otherwise.
fn write_error(path: &Path, e: io::Error) -> StoreError {
    let full = matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    );
    #[cfg(unix)]
    let full = full
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC | libc::EFBIG | libc::EDQUOT)
        );
    if full {
        StoreError::DiskFull {
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Reserves disk blocks for `file` up to `len` bytes (`posix_fallocate` on Linux: later writes
/// below `len` cannot run out of space; new bytes read as zeros). Elsewhere the file is only
/// extended, so a full disk shows up when writing instead.
#[cfg(target_os = "linux")]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: a valid open descriptor and plain integers.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
            0 => return Ok(()),
            libc::EINTR => continue,
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Writes all of `buf` at `offset`.
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let r = std::os::unix::fs::FileExt::write_at(file, buf, offset);
        #[cfg(windows)]
        let r = std::os::windows::fs::FileExt::seek_write(file, buf, offset);
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path)(e)),
        _ => Ok(()),
    }
}

/// Takes the directory's lock and records this process's pid in it.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false) // the holder's pid stays readable until we hold the lock
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_error(&path)(e)),
    }
    file.set_len(0).map_err(io_error(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_error(&path))?;
    Ok(file)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Directories cannot be opened for fsync here; the rename or create is as durable as the
/// platform makes it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// The contents of the `meta` file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Meta {
    last_assigned: u64,
    last_discarded: u64,
}

impl Meta {
    /// Reads `path`; all zeros if it does not exist.
    fn read(path: &Path) -> Result<Meta, StoreError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Meta::default()),
            Err(e) => return Err(io_error(path)(e)),
        };
        let size = file.metadata().map_err(io_error(path))?.len();
        if size != META_LEN as u64 {
            return Err(corrupt(
                path,
                0,
                format!("metadata file is {size} bytes, not {META_LEN}"),
            ));
        }
        let mut buf = [0u8; META_LEN];
        file.read_exact(&mut buf).map_err(io_error(path))?;
        let (body, crc) = buf.split_at(META_LEN - 4);
        if &body[..8] != META_MAGIC {
            return Err(corrupt(
                path,
                0,
                "not a publish store metadata file (bad magic)",
            ));
        }
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(corrupt(path, 0, "metadata CRC mismatch"));
        }
        let mut r = Reader(&body[8..]);
        let mut word = || r.u64_le().map_err(|what| corrupt(path, 0, what));
        Ok(Meta {
            last_assigned: word()?,
            last_discarded: word()?,
        })
    }

    /// Replaces `<dir>/meta` atomically and durably (temp file, fsync, rename, fsync of `dir`).
    fn write(self, dir: &Path) -> Result<(), StoreError> {
        let mut buf = Vec::with_capacity(META_LEN);
        buf.extend_from_slice(META_MAGIC);
        buf.extend_from_slice(&self.last_assigned.to_le_bytes());
        buf.extend_from_slice(&self.last_discarded.to_le_bytes());
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());

        let tmp = dir.join(META_TMP_FILE);
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&buf).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        drop(file);
        let path = dir.join(META_FILE);
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        sync_dir(dir)
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

/// The ids of the segment files in `dir`, ascending. Other files are ignored.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        let id = name.to_str().and_then(|name| {
            let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
            if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
                digits.parse::<u64>().ok()
            } else {
                None
            }
        });
        ids.extend(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates segment `id` holding just its header, durable (with its directory entry) unless the
/// policy is `Never`.
fn create_segment(dir: &Path, id: u64, fsync: FsyncPolicy) -> Result<Segment, StoreError> {
    let path = segment_path(dir, id);
    // Truncate rather than create_new: a file with this id can only be left by an earlier
    // attempt of this same roll that failed after creating it.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(SEGMENT_MAGIC).map_err(io_error(&path))?;
    if fsync != FsyncPolicy::Never {
        file.sync_data().map_err(io_error(&path))?;
        sync_dir(dir)?;
    }
    Ok(Segment {
        id,
        path,
        len: SEGMENT_HEADER_LEN,
        last_seq: 0,
    })
}

/// Reads every record of a segment in order, handing each to `apply` (whose error becomes
/// [`StoreError::Corrupt`] at that record). Returns the segment's length after recovery.
///
/// Damage (short header or record, zero length, length past the end, CRC mismatch) is cut off
/// when `is_last`, and is [`StoreError::Corrupt`] otherwise.
fn scan_segment(
    path: &Path,
    is_last: bool,
    prev_topic: &mut Option<Arc<str>>,
    mut apply: impl FnMut(Record) -> Result<(), String>,
) -> Result<u64, StoreError> {
    let file = File::open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);

    let mut magic = [0u8; SEGMENT_HEADER_LEN as usize];
    let header_ok = size >= SEGMENT_HEADER_LEN && {
        reader.read_exact(&mut magic).map_err(io_error(path))?;
        &magic == SEGMENT_MAGIC
    };
    if !header_ok {
        if is_last && size <= SEGMENT_HEADER_LEN {
            // A segment created just before a crash: no record can have been in it.
            drop(reader);
            tracing::warn!(path = %path.display(), size,
                "publish store: rewriting the incomplete header of the last segment");
            let mut file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(io_error(path))?;
            file.write_all(SEGMENT_MAGIC).map_err(io_error(path))?;
            file.sync_all().map_err(io_error(path))?;
            return Ok(SEGMENT_HEADER_LEN);
        }
        return Err(corrupt(
            path,
            0,
            "not a publish store segment (bad or short header)",
        ));
    }

    let mut offset = SEGMENT_HEADER_LEN;
    let mut payload = Vec::new();
    let damage = loop {
        let left = size - offset;
        if left == 0 {
            break None;
        }
        if left < RECORD_HEADER_LEN {
            break Some("short record header");
        }
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        reader.read_exact(&mut header).map_err(io_error(path))?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if len == 0 {
            break Some("record length is zero");
        }
        if u64::from(len) > left - RECORD_HEADER_LEN {
            break Some("record length runs past the end of the segment");
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload).map_err(io_error(path))?;
        if crc32fast::hash(&payload) != crc {
            break Some("record CRC mismatch");
        }
        let record = match decode_record(&payload, prev_topic) {
            Ok(r) => r,
            // A good checksum on bad fields is no torn write: damage wherever it is.
            Err(what) => {
                drop(reader);
                let v = verify_segment(path, is_last)?;
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    offset,
                    what: what.into(),
                    records_beyond: v.records_after(offset),
                });
            }
        };
        apply(record).map_err(|what| corrupt(path, offset, what))?;
        offset += RECORD_HEADER_LEN + u64::from(len);
    };

    let Some(what) = damage else {
        return Ok(offset);
    };
    drop(reader);
    // Bad bytes: a torn tail only at the end of the last segment with nothing good after it.
    let v = verify_segment(path, is_last)?;
    if let Some(d) = v.damage.first() {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            offset: d.start,
            what: if d.start == offset {
                what.to_owned()
            } else {
                d.what.clone()
            },
            records_beyond: v.records_after(d.start),
        });
    }
    if let Some((start, end)) = v.torn {
        tracing::info!(path = %path.display(), offset = start, cut_bytes = end - start,
            "publish store: cutting off a torn tail (a write interrupted by a crash, never reported stored)");
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        file.set_len(start).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))?;
    }
    // Otherwise only zeros follow: space reserved for appends, the end of the data.
    Ok(offset)
}

/// The health of a store directory: what [`FileStore::verify`] finds and
/// [`FileStore::repair`] mends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreCheck {
    /// Segment files read.
    pub segments: usize,
    /// Good records (messages and discard marks).
    pub records: u64,
    /// The discard mark (everything at or below it is acknowledged).
    pub last_discarded: u64,
    /// Every damaged range.
    pub damage: Vec<StoreDamage>,
    /// A torn tail of the last segment (file, first bad byte, end), cut quietly on open.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Files the damaged bytes were moved to (repair only).
    pub quarantined: Vec<PathBuf>,
}

/// The quarantine directory of a store (damaged bytes moved out by [`FileStore::repair`]).
pub const STORE_QUARANTINE_DIR: &str = "quarantine";

impl FileStore {
    /// Checks every segment of the store in `dir` without changing anything (the directory
    /// is locked meanwhile, so no store may have it open).
    pub fn verify(dir: &Path) -> Result<StoreCheck, StoreError> {
        let _lock = lock_dir(dir)?;
        Ok(check_dir(dir)?.0)
    }

    /// Repairs the store in `dir`: each damaged range is copied to
    /// `dir/quarantine/<segment>.<start>-<end>.bad`, and the segment is rewritten with every
    /// intact record on both sides (temporary file, fsync, rename, directory fsync). Returns
    /// what was found, with the messages lost. A healthy store is left as it is.
    pub fn repair(dir: &Path) -> Result<StoreCheck, StoreError> {
        let _lock = lock_dir(dir)?;
        let (mut check, per_segment) = check_dir(dir)?;
        if check.damage.is_empty() {
            return Ok(check);
        }
        let qdir = dir.join(STORE_QUARANTINE_DIR);
        fs::create_dir_all(&qdir).map_err(io_error(&qdir))?;
        for (path, v) in per_segment {
            if v.damage.is_empty() {
                continue;
            }
            let bytes = fs::read(&path).map_err(io_error(&path))?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("segment")
                .to_owned();
            for d in &v.damage {
                let q = qdir.join(format!("{name}.{}-{}.bad", d.start, d.end));
                let mut f = File::create(&q).map_err(io_error(&q))?;
                f.write_all(&bytes[d.start as usize..d.end as usize])
                    .map_err(io_error(&q))?;
                f.sync_all().map_err(io_error(&q))?;
                check.quarantined.push(q);
            }
            let mut out = Vec::with_capacity(bytes.len());
            out.extend_from_slice(SEGMENT_MAGIC);
            for (off, size) in &v.good {
                out.extend_from_slice(&bytes[*off as usize..(*off + *size) as usize]);
            }
            let tmp = path.with_extension("seg.repair");
            let mut f = File::create(&tmp).map_err(io_error(&tmp))?;
            f.write_all(&out).map_err(io_error(&tmp))?;
            f.sync_all().map_err(io_error(&tmp))?;
            drop(f);
            fs::rename(&tmp, &path).map_err(io_error(&path))?;
        }
        sync_dir(&qdir)?;
        sync_dir(dir)?;
        Ok(check)
    }
}

/// Checks every segment of `dir`, placing each damage in the whole store.
fn check_dir(dir: &Path) -> Result<(StoreCheck, Vec<(PathBuf, SegmentVerify)>), StoreError> {
    let ids = list_segments(dir)?;
    let meta = Meta::read(&dir.join(META_FILE))?;
    let mut check = StoreCheck {
        segments: ids.len(),
        ..StoreCheck::default()
    };
    let mut mark = meta.last_discarded;
    let mut per = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let path = segment_path(dir, id);
        let v = verify_segment(&path, i + 1 == ids.len())?;
        // Discard marks raise the mark; read them from the good records.
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        for (off, size) in &v.good {
            if let Ok(Record::Discard(up_to)) = decode_record(
                &bytes[*off as usize + 8..(*off + *size) as usize],
                &mut None,
            ) {
                mark = mark.max(up_to);
            }
        }
        if let Some((a, b)) = v.torn {
            check.torn_tail = Some((path.clone(), a, b));
        }
        per.push((path, v));
    }
    check.last_discarded = mark;
    // Place the damage: records before and after in the whole store, sequences around it.
    let total: u64 = per.iter().map(|(_, v)| v.good.len() as u64).sum();
    let mut before_segments = 0u64;
    let all_seqs: Vec<(usize, u64, u64)> = per
        .iter()
        .enumerate()
        .flat_map(|(i, (_, v))| v.seqs.iter().map(move |(o, s)| (i, *o, *s)))
        .collect();
    for (i, (_, v)) in per.iter_mut().enumerate() {
        for d in &mut v.damage {
            let in_seg = v.good.iter().filter(|(o, _)| *o < d.start).count() as u64;
            d.records_before = before_segments + in_seg;
            d.records_after = total - d.records_before;
            let prev = all_seqs
                .iter()
                .filter(|(s, o, _)| (*s, *o) < (i, d.start))
                .map(|x| x.2)
                .max();
            let next = all_seqs
                .iter()
                .filter(|(s, o, _)| (*s, *o) >= (i, d.end))
                .map(|x| x.2)
                .min();
            let first = prev.map_or(1, |p| p + 1).max(mark + 1);
            let last = match next {
                Some(n) => n.saturating_sub(1),
                None => d.readable.map_or(0, |r| r.1),
            };
            d.lost = (first <= last).then_some((first, last));
            check.damage.push(d.clone());
        }
        before_segments += v.good.len() as u64;
    }
    check.records = total;
    Ok((check, per))
}

/// A good record of `bytes` at `off`: its size. Checks the length, the checksum and that the
/// payload decodes.
fn valid_at(bytes: &[u8], off: usize) -> Option<usize> {
    let head = bytes.get(off..off + RECORD_HEADER_LEN as usize)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    if len == 0 {
        return None;
    }
    let payload = bytes.get(off + 8..off + 8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    decode_record(payload, &mut None).ok()?;
    Some(8 + len)
}

/// The next good record at or after `from`.
fn next_valid(bytes: &[u8], mut from: usize) -> Option<usize> {
    while from + RECORD_HEADER_LEN as usize <= bytes.len() {
        if valid_at(bytes, from).is_some() {
            return Some(from);
        }
        from += 1;
    }
    None
}

/// Bad bytes in a segment with good records after them (or any bad bytes in a finished one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDamage {
    /// The segment file.
    pub path: PathBuf,
    /// First bad byte.
    pub start: u64,
    /// First byte after them (the next good record, or the end of the file).
    pub end: u64,
    /// What was wrong.
    pub what: String,
    /// Good records before the damage (in the whole store).
    pub records_before: u64,
    /// Good records after it (in the whole store).
    pub records_after: u64,
    /// Sequences of the messages still readable in the damaged bytes (checksum failed, so
    /// unverified), lowest and highest.
    pub readable: Option<(u64, u64)>,
    /// Messages between the last good one before the damage and the first after it that are
    /// not yet acknowledged (above the discard mark): reported stored once, now lost (unless
    /// that stretch of sequences was never assigned to messages).
    pub lost: Option<(u64, u64)>,
}

/// What one segment holds, from [`verify_segment`].
#[derive(Debug, Default)]
struct SegmentVerify {
    /// Offsets and sizes of the good records.
    good: Vec<(u64, u64)>,
    /// Message sequence of each good record that is a message, by offset.
    seqs: Vec<(u64, u64)>,
    /// Damaged ranges (start, end, what).
    damage: Vec<StoreDamage>,
    /// A torn tail of the last segment.
    torn: Option<(u64, u64)>,
}

impl SegmentVerify {
    fn records_after(&self, offset: u64) -> u64 {
        self.good.iter().filter(|(o, _)| *o > offset).count() as u64
    }
}

/// Classifies every byte of a segment (module docs, Recovery).
fn verify_segment(path: &Path, is_last: bool) -> Result<SegmentVerify, StoreError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let mut v = SegmentVerify::default();
    let hl = SEGMENT_HEADER_LEN as usize;
    let damage = |start: usize, end: usize, what: &str| StoreDamage {
        path: path.to_path_buf(),
        start: start as u64,
        end: end as u64,
        what: what.to_owned(),
        records_before: 0,
        records_after: 0,
        readable: None,
        lost: None,
    };
    if bytes.len() < hl || &bytes[..hl] != SEGMENT_MAGIC {
        if is_last && bytes.len() <= hl {
            return Ok(v); // created just before a crash; open rewrites it
        }
        v.damage.push(damage(
            0,
            hl.min(bytes.len()),
            "bad or short segment header",
        ));
    }
    let mut off = hl;
    while off < bytes.len() {
        if let Some(size) = valid_at(&bytes, off) {
            v.good.push((off as u64, size as u64));
            let payload = &bytes[off + 8..off + size];
            if let Ok(Record::Message(m)) = decode_record(payload, &mut None) {
                v.seqs.push((off as u64, m.seq));
            }
            off += size;
            continue;
        }
        match next_valid(&bytes, off + 1) {
            Some(next) => {
                v.damage
                    .push(damage(off, next, "record checksum or length mismatch"));
                off = next;
            }
            None => {
                let zeros = bytes[off..].iter().all(|b| *b == 0);
                if !is_last {
                    v.damage.push(damage(
                        off,
                        bytes.len(),
                        if zeros {
                            "zero bytes after the last record of a finished segment"
                        } else {
                            "bad bytes at the end of a finished segment"
                        },
                    ));
                } else if !zeros {
                    v.torn = Some((off as u64, bytes.len() as u64));
                }
                break;
            }
        }
    }
    // Messages still readable inside the damaged bytes (ignoring checksums).
    for d in &mut v.damage {
        let (mut lo, mut hi) = (u64::MAX, 0);
        let mut o = d.start as usize;
        while o + 8 < d.end as usize {
            let len = u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or_default()) as usize;
            if len > 0 && o + 8 + len <= d.end as usize {
                if let Ok(Record::Message(m)) = decode_record(&bytes[o + 8..o + 8 + len], &mut None)
                {
                    lo = lo.min(m.seq);
                    hi = hi.max(m.seq);
                    o += 8 + len;
                    continue;
                }
            }
            o += 1;
        }
        d.readable = (lo <= hi).then_some((lo, hi));
    }
    Ok(v)
}

/// Appends one framed record to `buf`: room for the header, the payload `body` writes, then the
/// header filled in. On error `buf` is unchanged.
fn encode_record(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let start = buf.len();
    let payload_at = start + RECORD_HEADER_LEN as usize;
    buf.resize(payload_at, 0);
    body(buf);
    let size = buf.len() - payload_at;
    let Ok(len) = u32::try_from(size) else {
        buf.truncate(start);
        return Err(StoreError::TooLarge {
            size,
            max_bytes: u32::MAX as usize,
        });
    };
    let crc = crc32fast::hash(&buf[payload_at..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..payload_at].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The length of a message record's payload, as [`encode_message`] writes it.
fn message_payload_len(msg: &StoredMessage) -> usize {
    fn varint_len(mut v: u64) -> usize {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    }
    let bytes = |len: usize| varint_len(len as u64) + len;
    let mut size = 1 + 8 + 1 + bytes(msg.topic.len()) + bytes(msg.data.len());
    if let Some(opts) = msg.options.as_deref() {
        for s in [
            &opts.correlation_id,
            &opts.sow_key,
            &opts.filter,
            &opts.sow_keys,
        ]
        .into_iter()
        .flatten()
        {
            size += bytes(s.len());
        }
        if let Some(e) = opts.expiration {
            size += varint_len(e);
        }
    }
    size
}

fn encode_message(buf: &mut Vec<u8>, msg: &StoredMessage) {
    buf.push(msg.operation as u8);
    buf.extend_from_slice(&msg.seq.to_le_bytes());
    let flags_at = buf.len();
    buf.push(0);
    put_bytes(buf, msg.topic.as_bytes());
    put_bytes(buf, &msg.data);
    let Some(opts) = msg.options.as_deref() else {
        return;
    };
    let mut flags = HAS_OPTIONS;
    if let Some(cid) = &opts.correlation_id {
        flags |= HAS_CORRELATION_ID;
        put_bytes(buf, cid.as_bytes());
    }
    if let Some(expiration) = opts.expiration {
        flags |= HAS_EXPIRATION;
        put_varint(buf, expiration);
    }
    for (bit, field) in [
        (HAS_SOW_KEY, &opts.sow_key),
        (HAS_FILTER, &opts.filter),
        (HAS_SOW_KEYS, &opts.sow_keys),
    ] {
        if let Some(s) = field {
            flags |= bit;
            put_bytes(buf, s.as_bytes());
        }
    }
    buf[flags_at] = flags;
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// One decoded record.
#[derive(Debug)]
enum Record {
    Message(StoredMessage),
    Discard(u64),
}

/// Decodes a payload whose CRC matched. `prev_topic` is the last topic seen, shared when the
/// next message has the same one.
fn decode_record(
    payload: &[u8],
    prev_topic: &mut Option<Arc<str>>,
) -> Result<Record, &'static str> {
    let mut r = Reader(payload);
    let tag = r.u8()?;
    let seq = r.u64_le()?;
    if tag == TAG_DISCARD {
        r.finish()?;
        return Ok(Record::Discard(seq));
    }
    let operation = Operation::from_u8(tag).ok_or("unknown record type")?;
    let flags = r.u8()?;
    if flags & !ALL_FLAGS != 0 || (flags != 0 && flags & HAS_OPTIONS == 0) {
        return Err("unknown option flags");
    }
    let topic_str = r.str()?;
    let topic = match prev_topic {
        Some(topic) if **topic == *topic_str => Arc::clone(topic),
        _ => prev_topic.insert(Arc::from(topic_str)).clone(),
    };
    let data = Bytes::copy_from_slice(r.bytes()?);
    let options = if flags & HAS_OPTIONS != 0 {
        let correlation_id = r.string_if(flags & HAS_CORRELATION_ID != 0)?;
        let expiration = if flags & HAS_EXPIRATION != 0 {
            Some(r.varint()?)
        } else {
            None
        };
        let sow_key = r.string_if(flags & HAS_SOW_KEY != 0)?;
        let filter = r.string_if(flags & HAS_FILTER != 0)?;
        let sow_keys = r.string_if(flags & HAS_SOW_KEYS != 0)?;
        Some(Box::new(MessageOptions {
            correlation_id,
            expiration,
            sow_key,
            filter,
            sow_keys,
        }))
    } else {
        None
    };
    r.finish()?;
    Ok(Record::Message(StoredMessage {
        seq,
        operation,
        topic,
        data,
        options,
    }))
}

/// A bounds-checked cursor over a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("field runs past the end of the record");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or("field runs past the end of the record")?;
        self.0 = rest;
        Ok(b)
    }

    fn u64_le(&mut self) -> Result<u64, &'static str> {
        let le = <[u8; 8]>::try_from(self.take(8)?).map_err(|_| "short u64")?;
        Ok(u64::from_le_bytes(le))
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| "field length too large")?;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "string field is not UTF-8")
    }

    fn string_if(&mut self, present: bool) -> Result<Option<String>, &'static str> {
        if present {
            self.str().map(|s| Some(s.to_owned()))
        } else {
            Ok(None)
        }
    }

    fn finish(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after the record's fields")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            operation: Operation::Publish,
            topic: "orders".into(),
            data: Bytes::from(format!("body {seq}")),
            options: None,
        }
    }

    fn config(dir: &Path, fsync: FsyncPolicy, segment_bytes: u64) -> FileStoreConfig {
        FileStoreConfig {
            dir: dir.to_path_buf(),
            fsync,
            segment_bytes,
        }
    }

    fn open(dir: &Path) -> FileStore {
        FileStore::open(FileStoreConfig::new(dir)).unwrap()
    }

    fn seqs(store: &FileStore) -> Vec<u64> {
        store.iter().map(|m| m.seq).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|id| segment_path(dir, id))
            .collect()
    }

    fn dir_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    /// Applies `f` to the bytes of `path` in place.
    fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(path).unwrap();
        f(&mut bytes);
        fs::write(path, bytes).unwrap();
    }

    /// Five messages in one segment; returns the offset at which the fifth record starts.
    fn five_messages(dir: &Path) -> u64 {
        let mut store = open(dir);
        for seq in 1..=4 {
            store.append(msg(seq)).unwrap();
        }
        store.sync().unwrap();
        let tail = store.probe().active_len;
        store.append(msg(5)).unwrap();
        store.sync().unwrap();
        tail
    }

    #[test]
    fn retracted_messages_never_come_back() {
        for fsync in [FsyncPolicy::Batch, FsyncPolicy::Always, FsyncPolicy::Never] {
            let dir = tempfile::tempdir().unwrap();
            {
                let mut store = FileStore::open(config(dir.path(), fsync, 1 << 20)).unwrap();
                for seq in 1..=3 {
                    store.append(msg(seq)).unwrap();
                }
                store.sync().unwrap();
                // Appended (and under Always already written) after the last sync; an ack
                // arrives in between.
                for seq in 4..=7 {
                    store.append(msg(seq)).unwrap();
                }
                store.discard_up_to(1).unwrap();
                assert_eq!(store.retract(6).unwrap(), 2, "{fsync:?}");
                assert_eq!(seqs(&store), [2, 3, 4, 5]);
                store.append(msg(8)).unwrap();
                store.sync().unwrap();
            }
            let store = open(dir.path());
            assert_eq!(seqs(&store), [2, 3, 4, 5, 8], "{fsync:?}");
            assert_eq!(store.last_discarded(), 1);
            assert_eq!(store.last_assigned(), 8);
        }
    }

    #[test]
    fn reopen_recovers_every_field_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let full = MessageOptions {
            correlation_id: Some("cid-7".into()),
            expiration: Some(u64::MAX),
            sow_key: Some("k1".into()),
            filter: Some("/id > 3".into()),
            sow_keys: Some("a,b,c".into()),
        };
        let some = MessageOptions {
            expiration: Some(300),
            ..MessageOptions::default()
        };
        let written = vec![
            StoredMessage {
                options: Some(Box::new(full)),
                ..msg(1_000_000_000_001)
            },
            StoredMessage {
                operation: Operation::DeltaPublish,
                ..msg(1_000_000_000_002)
            },
            StoredMessage {
                operation: Operation::SowDelete,
                topic: "other/tópico".into(),
                data: Bytes::new(),
                options: Some(Box::new(some)),
                seq: 1_000_000_000_005,
            },
            StoredMessage {
                options: Some(Box::default()),
                data: Bytes::from(vec![0u8, 255, 10, 13]),
                ..msg(1_000_000_000_006)
            },
            msg(1_000_000_000_007),
        ];
        let mut store = open(dir.path());
        for m in &written {
            store.append(m.clone()).unwrap();
        }
        store.sync().unwrap();
        drop(store);

        let store = open(dir.path());
        assert_eq!(
            store.iter().map(StoredMessage::from).collect::<Vec<_>>(),
            written
        );
        assert_eq!(store.len(), 5);
        assert_eq!(
            store.bytes(),
            written.iter().map(StoredMessage::weight).sum::<usize>()
        );
        assert_eq!(store.last_assigned(), 1_000_000_000_007);
        assert_eq!(store.last_discarded(), 0);
        assert_eq!(store.get(1_000_000_000_005), Some(written[2].view()));
        // Consecutive messages to the same topic share one allocation after reload.
        let topics: Vec<_> = store.iter().map(|m| Arc::clone(m.topic)).collect();
        assert!(Arc::ptr_eq(&topics[0], &topics[1]));
        assert!(Arc::ptr_eq(&topics[3], &topics[4]));
    }

    #[test]
    fn discarded_messages_stay_discarded_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        for seq in 1..=10 {
            store.append(msg(seq)).unwrap();
        }
        assert_eq!(store.discard_up_to(6).unwrap(), 6);
        store.sync().unwrap();
        drop(store);

        let mut store = open(dir.path());
        assert_eq!(seqs(&store), vec![7, 8, 9, 10]);
        assert_eq!(store.last_discarded(), 6);
        assert_eq!(store.last_assigned(), 10);
        // A mark above everything assigned (the server knows more) is kept too.
        assert_eq!(store.discard_up_to(50).unwrap(), 4);
        store.sync().unwrap();
        drop(store);

        let store = open(dir.path());
        assert!(store.is_empty());
        assert_eq!(store.last_discarded(), 50);
        assert_eq!(store.last_assigned(), 10);
    }

    #[test]
    fn numbering_continues_after_everything_is_discarded_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        // A segment size of 1 finishes a segment after every write.
        let mut store = FileStore::open(config(dir.path(), FsyncPolicy::Always, 1)).unwrap();
        for seq in 101..=110 {
            store.append(msg(seq)).unwrap();
            store.sync().unwrap();
        }
        assert_eq!(segment_files(dir.path()).len(), 11);
        assert_eq!(store.discard_up_to(110).unwrap(), 10);
        // The discard reaches the I/O thread before the sync after it.
        store.sync().unwrap();
        // Only the active segment is left, and it holds no message.
        assert_eq!(store.probe().finished_last_seqs.len(), 0);
        assert_eq!(segment_files(dir.path()).len(), 1);
        drop(store);

        let mut store = FileStore::open(config(dir.path(), FsyncPolicy::Always, 1)).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.last_assigned(), 110);
        assert_eq!(store.last_discarded(), 110);
        assert!(matches!(
            store.append(msg(110)),
            Err(StoreError::SequenceNotIncreasing {
                seq: 110,
                last: 110
            })
        ));
        store.append(msg(111)).unwrap();
        store.sync().unwrap();
        drop(store);
        assert_eq!(seqs(&open(dir.path())), vec![111]);
    }

    #[test]
    fn segments_are_deleted_as_acks_come() {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = 4096;
        let mut store =
            FileStore::open(config(dir.path(), FsyncPolicy::Batch, segment_bytes)).unwrap();
        let body = Bytes::from(vec![b'x'; 100]);
        let mut max_dir = 0;
        for seq in 1..=5_000u64 {
            store
                .append(StoredMessage {
                    data: body.clone(),
                    ..msg(seq)
                })
                .unwrap();
            if seq % 20 == 0 {
                store.sync().unwrap();
                // The server lags 40 messages behind.
                store.discard_up_to(seq.saturating_sub(40)).unwrap();
                max_dir = max_dir.max(dir_bytes(dir.path()));
            }
        }
        // 5000 records of ~130 bytes were written: ~650 KB. On disk at any time: the
        // unacknowledged 40 (~5 KB), the active segment and the one before it.
        assert!(
            max_dir < 4 * segment_bytes,
            "directory reached {max_dir} bytes"
        );
        assert!(segment_files(dir.path()).len() <= 3);
        assert_eq!(store.len(), 40);
        store.sync().unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(seqs(&store), (4961..=5000).collect::<Vec<_>>());
    }

    #[test]
    fn torn_tail_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let tail = five_messages(dir.path());
        let segment = segment_files(dir.path()).pop().unwrap();
        // The end of the fifth record (space after it is reserved, zeros).
        let bytes = fs::read(&segment).unwrap();
        let t = tail as usize;
        let full = tail + 8 + u64::from(u32::from_le_bytes(bytes[t..t + 4].try_into().unwrap()));
        fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(full - 3)
            .unwrap();

        let mut store = open(dir.path());
        assert_eq!(seqs(&store), vec![1, 2, 3, 4]);
        assert_eq!(store.last_assigned(), 4);
        assert_eq!(fs::metadata(&segment).unwrap().len(), tail);
        store.append(msg(5)).unwrap();
        store.append(msg(6)).unwrap();
        store.sync().unwrap();
        drop(store);
        assert_eq!(seqs(&open(dir.path())), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn short_record_header_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let tail = five_messages(dir.path());
        let segment = segment_files(dir.path()).pop().unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(tail + 5)
            .unwrap();
        assert_eq!(seqs(&open(dir.path())), vec![1, 2, 3, 4]);
        assert_eq!(fs::metadata(&segment).unwrap().len(), tail);
    }

    #[test]
    fn flipped_byte_in_tail_record_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let tail = five_messages(dir.path()) as usize;
        let segment = segment_files(dir.path()).pop().unwrap();
        edit(&segment, |b| b[tail + 8 + 12] ^= 0x20);

        let store = open(dir.path());
        assert_eq!(seqs(&store), vec![1, 2, 3, 4]);
        assert_eq!(fs::metadata(&segment).unwrap().len(), tail as u64);
    }

    #[test]
    fn zeroed_or_huge_tail_lengths_are_cut_off() {
        for len in [0u32, u32::MAX, 1 << 31] {
            let dir = tempfile::tempdir().unwrap();
            let tail = five_messages(dir.path()) as usize;
            let segment = segment_files(dir.path()).pop().unwrap();
            // A huge length must not allocate: it runs past the end of the file.
            edit(&segment, |b| {
                b[tail..tail + 4].copy_from_slice(&len.to_le_bytes())
            });
            assert_eq!(seqs(&open(dir.path())), vec![1, 2, 3, 4], "length {len}");
        }
        // Preallocated zeros after a crash: a record of length 0 and CRC 0.
        let dir = tempfile::tempdir().unwrap();
        let tail = five_messages(dir.path()) as usize;
        let segment = segment_files(dir.path()).pop().unwrap();
        edit(&segment, |b| b.resize(tail + 4096, 0));
        assert_eq!(seqs(&open(dir.path())), vec![1, 2, 3, 4, 5]);
    }

    /// Three segments of one message each; returns their paths.
    fn three_segments(dir: &Path) -> Vec<PathBuf> {
        let mut store = FileStore::open(config(dir, FsyncPolicy::Always, 1)).unwrap();
        for seq in 1..=3 {
            store.append(msg(seq)).unwrap();
            store.sync().unwrap();
        }
        drop(store);
        let segments = segment_files(dir);
        assert_eq!(
            segments.len(),
            4,
            "three full segments and the empty active one"
        );
        segments
    }

    #[test]
    fn corruption_in_a_middle_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let segments = three_segments(dir.path());
        edit(&segments[1], |b| b[8 + 8 + 4] ^= 1);
        match FileStore::open(FileStoreConfig::new(dir.path())) {
            Err(StoreError::Corrupt {
                path, offset, what, ..
            }) => {
                assert_eq!(path, segments[1]);
                assert_eq!(offset, SEGMENT_HEADER_LEN);
                assert!(what.contains("CRC"), "{what}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Nothing was cut off.
        assert!(fs::metadata(&segments[1]).unwrap().len() > SEGMENT_HEADER_LEN);
    }

    #[test]
    fn bad_length_or_truncation_in_a_middle_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let segments = three_segments(dir.path());
        edit(&segments[0], |b| {
            b[8..12].copy_from_slice(&u32::MAX.to_le_bytes())
        });
        let err = FileStore::open(FileStoreConfig::new(dir.path())).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, .. } if *path == segments[0]),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let segments = three_segments(dir.path());
        edit(&segments[2], |b| b.truncate(b.len() - 1));
        let err = FileStore::open(FileStoreConfig::new(dir.path())).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, .. } if *path == segments[2]),
            "{err}"
        );
    }

    #[test]
    fn undecodable_record_with_good_crc_is_an_error_even_at_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let tail = five_messages(dir.path()) as usize;
        let segment = segment_files(dir.path()).pop().unwrap();
        edit(&segment, |b| {
            b.truncate(tail);
            encode_record(b, |p| p.extend_from_slice(&[9, 0, 0])).unwrap();
        });
        let err = FileStore::open(FileStoreConfig::new(dir.path())).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        match FileStore::open(FileStoreConfig::new(dir.path())) {
            Err(StoreError::Locked { path, holder }) => {
                assert_eq!(path, dir.path());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(store);
        open(dir.path());
    }

    #[test]
    fn every_fsync_policy_stores_discards_and_reopens() {
        for policy in [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::Never] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = FileStore::open(config(dir.path(), policy, 512)).unwrap();
            for seq in 1..=50 {
                store.append(msg(seq)).unwrap();
                if seq % 10 == 0 {
                    store.sync().unwrap();
                }
            }
            assert_eq!(store.discard_up_to(20).unwrap(), 20);
            store.sync().unwrap();
            assert!(
                store.probe().finished_last_seqs.iter().all(|&s| s > 20),
                "{policy:?}"
            );
            assert!(
                segment_files(dir.path()).len() > 1,
                "{policy:?} rolled segments"
            );
            store.append(msg(51)).unwrap();
            // Every policy buffers until a sync hands the batch to the I/O thread.
            assert!(!store.pending.is_empty(), "{policy:?} buffers until sync");
            store.sync().unwrap();
            drop(store);

            let store = FileStore::open(config(dir.path(), policy, 512)).unwrap();
            assert_eq!(seqs(&store), (21..=51).collect::<Vec<_>>(), "{policy:?}");
            assert_eq!(store.last_assigned(), 51);
            assert_eq!(store.last_discarded(), 20);
        }
    }

    #[test]
    fn unsynced_batch_may_be_lost_synced_survives() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        for seq in 1..=5 {
            store.append(msg(seq)).unwrap();
        }
        store.sync().unwrap();
        for seq in 6..=8 {
            store.append(msg(seq)).unwrap();
        }
        store.discard_up_to(2).unwrap();
        // A crash: the store goes away without the sync that would have made 6..=8 durable.
        drop(store);

        let mut store = open(dir.path());
        assert_eq!(seqs(&store), vec![1, 2, 3, 4, 5]);
        assert_eq!(store.last_assigned(), 5);
        store.append(msg(6)).unwrap();
        store.sync().unwrap();
        drop(store);
        assert_eq!(seqs(&open(dir.path())), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejected_append_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.append(msg(5)).unwrap();
        let before = store.pending.len();
        assert!(matches!(
            store.append(msg(5)),
            Err(StoreError::SequenceNotIncreasing { .. })
        ));
        assert_eq!(store.pending.len(), before);
        store.sync().unwrap();
        drop(store);
        assert_eq!(seqs(&open(dir.path())), vec![5]);
    }

    #[test]
    fn incomplete_header_of_last_segment_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let segments = three_segments(dir.path());
        let last = segments.last().unwrap();
        edit(last, |b| b.truncate(3));
        let mut store = open(dir.path());
        assert_eq!(seqs(&store), vec![1, 2, 3]);
        store.append(msg(4)).unwrap();
        store.sync().unwrap();
        drop(store);
        assert_eq!(seqs(&open(dir.path())), vec![1, 2, 3, 4]);
    }

    #[test]
    fn damaged_metadata_is_an_error_and_a_leftover_temp_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        three_segments(dir.path());
        let mut store = FileStore::open(config(dir.path(), FsyncPolicy::Always, 1)).unwrap();
        store.discard_up_to(3).unwrap();
        drop(store);
        fs::write(dir.path().join(META_TMP_FILE), b"half-written").unwrap();
        let store = open(dir.path());
        assert_eq!((store.last_assigned(), store.last_discarded()), (3, 3));
        assert!(!dir.path().join(META_TMP_FILE).exists());
        drop(store);

        edit(&dir.path().join(META_FILE), |b| b[10] ^= 1);
        let err = FileStore::open(FileStoreConfig::new(dir.path())).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn varints_round_trip_and_overflow_is_refused() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut r = Reader(&buf);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.finish().is_ok());
        }
        assert!(Reader(&[0xff; 10]).varint().is_err());
        assert!(
            Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        assert!(Reader(&[0x80]).varint().is_err());
    }

    /// 64 messages over several finished segments and an active one; returns (segment paths,
    /// per segment the (offset, seq) of each message).
    fn spread(dir: &Path) -> Vec<(PathBuf, Vec<(u64, u64)>)> {
        // `Never`: the same files, without waiting for the disk.
        let mut store = FileStore::open(config(dir, FsyncPolicy::Never, 600)).unwrap();
        for seq in 1..=64 {
            store.append(msg(seq)).unwrap();
            if seq % 5 == 0 {
                store.sync().unwrap();
            }
        }
        store.sync().unwrap();
        drop(store);
        let files = segment_files(dir);
        let n = files.len();
        files
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let v = verify_segment(&p, i + 1 == n).unwrap();
                (p, v.seqs)
            })
            .collect()
    }

    #[test]
    fn damage_at_start_middle_and_end_of_finished_and_active_segments() {
        for (from_end, pick) in [(1, 0), (1, 1), (1, 2), (0, 0), (0, 1), (0, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let segs = spread(dir.path());
            assert!(segs.len() >= 3, "{}", segs.len());
            let (path, msgs) = &segs[segs.len() - 1 - from_end];
            assert!(msgs.len() >= 3, "{msgs:?}");
            let (offset, seq) = msgs[[0, msgs.len() / 2, msgs.len() - 1][pick]];
            let case = format!("segment {from_end} from the end, seq {seq}");
            // A byte of the body.
            edit(path, |b| b[offset as usize + 8 + 12] ^= 0x20);
            let len_before = fs::metadata(path).unwrap().len();
            let result = FileStore::open(FileStoreConfig::new(dir.path()));
            if from_end == 0 && pick == 2 {
                // The last record of the active segment: a torn tail, cut quietly.
                let store = result.unwrap();
                assert_eq!(seqs(&store), (1..seq).collect::<Vec<_>>(), "{case}");
                continue;
            }
            match result {
                Err(StoreError::Corrupt {
                    path: p,
                    offset: o,
                    records_beyond,
                    ..
                }) => {
                    assert_eq!((&p, o), (path, offset), "{case}");
                    assert_eq!(records_beyond, 64 - seq, "{case}");
                }
                other => panic!("{case}: {other:?}"),
            }
            assert_eq!(
                fs::metadata(path).unwrap().len(),
                len_before,
                "{case}: nothing cut"
            );
            let check = FileStore::verify(dir.path()).unwrap();
            assert_eq!(check.damage.len(), 1, "{case}");
            let d = &check.damage[0];
            assert_eq!(
                (d.records_before, d.records_after),
                (seq - 1, 64 - seq),
                "{case}"
            );
            assert_eq!(d.readable, Some((seq, seq)), "{case}");
            assert_eq!(d.lost, Some((seq, seq)), "{case}");
            let repaired = FileStore::repair(dir.path()).unwrap();
            assert_eq!(repaired.damage, check.damage);
            assert_eq!(repaired.quarantined.len(), 1);
            assert!(FileStore::verify(dir.path()).unwrap().damage.is_empty());
            let store = open(dir.path());
            let expect: Vec<u64> = (1..=64).filter(|s| *s != seq).collect();
            assert_eq!(seqs(&store), expect, "{case}");
        }
    }

    #[test]
    fn a_full_disk_refuses_the_write_cleanly_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(config(dir.path(), FsyncPolicy::Batch, 4096)).unwrap();
        // Use up the reservation, then let reserving fail.
        let mut seq = 0;
        loop {
            let p = store.probe();
            if p.allocated <= p.active_len + 200 {
                break;
            }
            seq += 1;
            store.append(msg(seq)).unwrap();
            store.sync().unwrap();
        }
        store.fail_reserve(true);
        let mut refused = None;
        for _ in 0..10 {
            store.append(msg(seq + 1)).unwrap();
            match store.sync() {
                Ok(()) => seq += 1,
                Err(e @ StoreError::DiskFull { .. }) => {
                    let text = e.to_string();
                    let path = store.probe().active_path;
                    assert!(text.contains(&path.display().to_string()), "{text}");
                    assert_eq!(text.matches("publish store").count(), 1, "{text}");
                    // What the publish store does with a failed sync: retract, never send.
                    assert_eq!(store.retract(seq + 1).unwrap(), 1);
                    assert!(store.get(seq + 1).is_none(), "nothing stored");
                    refused = Some(seq + 1);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let refused = refused.expect("a full disk refused a write");
        store.fail_reserve(false);
        // Numbering goes on after the refused write; writes resume once there is room.
        store.append(msg(refused + 1)).unwrap();
        store.sync().unwrap();
        drop(store);
        let mut expected: Vec<u64> = (1..=seq).collect();
        expected.push(refused + 1);
        assert_eq!(seqs(&open(dir.path())), expected);
    }
}
