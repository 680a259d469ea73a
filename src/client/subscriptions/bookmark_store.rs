//! Bookmark stores: where the client keeps, per subscription id, what its subscriber has
//! processed (the semantics are in `bookmark_book.rs`), in memory or in a file.
//!
//! - [`BookmarkStoreKind::Memory`] (the default) survives reconnects and failover within the
//!   process: a bookmark subscription resumes where its subscriber got to.
//! - [`BookmarkStoreKind::File`] also survives the process (a crash, a restart). Every change is
//!   handed to a writer thread, which appends it to the file (and fsyncs, unless told not to)
//!   shortly after the subscriber's handler returned, never on the actor's thread. After a
//!   crash, the messages that can come again are those processed after the last change that
//!   reached the file (in practice the last batch or two); nothing unprocessed is ever
//!   skipped, because a mark only moves once a message is processed.
//!
//! # The file
//!
//! One record per line, each `<crc32 of the rest, 8 hex digits> <record>`:
//!
//! ```text
//! 1a2b3c4d R <sub id>                 forget this subscription's history
//! 5e6f7a8b M <sub id> <publisher> <seq>   the publisher's mark rose to seq
//! 9c0d1e2f D <sub id> <publisher> <seq>   seq was processed above the mark
//! ```
//!
//! Sub ids are percent-encoded (anything but `A-Z a-z 0-9 - _ . : @`). Opening replays the
//! records; a damaged **last** line (a write cut short by a crash) is ignored and cut off, and
//! damage anywhere else is a [`BookmarkStoreError::Corrupt`]: a file that cannot be trusted is
//! refused, not guessed at. When the file has grown to several times what it holds, the
//! writer rewrites it as a snapshot (a temporary file, fsynced, renamed over the old one). A
//! second client opening the same file gets [`BookmarkStoreError::Locked`] (a lock on
//! `<file>.lock` is held while the store is open). A write that fails is logged and the store
//! stops writing: the file then holds older marks, so a later restart repeats messages rather
//! than skipping any.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::bookmark_book::{Change, SubscriptionBook};
use super::errors::BookmarkStoreError;

/// Which bookmark store a client keeps (see [`ClientConfig::bookmark_store`]).
///
/// [`ClientConfig::bookmark_store`]: crate::client::ClientConfig::bookmark_store
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BookmarkStoreKind {
    /// In memory: survives reconnects, not the process.
    #[default]
    Memory,
    /// In a file: survives the process.
    File {
        /// The file (created if missing).
        path: PathBuf,
        /// fsync after each group of writes (survives power loss); `false` survives a
        /// process crash only.
        fsync: bool,
    },
}

impl BookmarkStoreKind {
    /// A file store at `path`, fsynced.
    pub fn file(path: impl Into<PathBuf>) -> BookmarkStoreKind {
        BookmarkStoreKind::File {
            path: path.into(),
            fsync: true,
        }
    }
}

/// The store the subscription actor keeps: every subscription's book, and the file writer.
#[derive(Debug, Default)]
pub(crate) struct BookmarkStore {
    books: HashMap<String, SubscriptionBook>,
    writer: Option<Writer>,
}

impl BookmarkStore {
    /// Opens the store `kind` describes (reads the whole file: call it where blocking is
    /// allowed, as `ClientConfig::start` does for the publish store).
    pub fn open(kind: &BookmarkStoreKind) -> Result<BookmarkStore, BookmarkStoreError> {
        match kind {
            BookmarkStoreKind::Memory => Ok(BookmarkStore::default()),
            BookmarkStoreKind::File { path, fsync } => {
                let (books, file, lock, size) = load(path)?;
                let mirror = books.clone();
                Ok(BookmarkStore {
                    books,
                    writer: Some(Writer::start(
                        path.clone(),
                        file,
                        lock,
                        *fsync,
                        mirror,
                        size,
                    )),
                })
            }
        }
    }

    /// Takes the book of `sub_id` out of the store, for a subscription that goes live (it
    /// keeps it while it lives, and gives it back with [`BookmarkStore::put_book`]).
    pub fn take_book(&mut self, sub_id: &str) -> SubscriptionBook {
        self.books.remove(sub_id).unwrap_or_default()
    }

    /// Gives back the book of an ended subscription; only its persistent part is kept.
    pub fn put_book(&mut self, sub_id: &str, book: &SubscriptionBook) {
        if book.is_empty() {
            return;
        }
        let mut kept = SubscriptionBook::default();
        for c in book.snapshot() {
            kept.apply(c);
        }
        self.books.insert(sub_id.to_owned(), kept);
    }

    /// The resume bookmark of `sub_id` held in the store (not of a live subscription, which
    /// holds its own book).
    #[cfg(test)]
    pub fn most_recent(&self, sub_id: &str) -> Option<String> {
        self.books
            .get(sub_id)
            .and_then(SubscriptionBook::most_recent)
    }

    /// Forgets `sub_id`'s history (a subscription placed with an explicit bookmark).
    pub fn reset(&mut self, sub_id: &str) {
        self.books.remove(sub_id);
        self.persist(sub_id, &[Change::Reset]);
    }

    /// Hands `changes` of `sub_id` to the file writer (nothing to do in memory).
    pub fn persist(&mut self, sub_id: &str, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        if let Some(w) = &self.writer {
            w.push(sub_id, changes);
        }
    }

    /// Resolves `done` once everything handed to the writer so far is in the file (at once
    /// for a memory store). Never blocks the caller.
    pub fn when_written(&self, done: tokio::sync::oneshot::Sender<()>) {
        match &self.writer {
            Some(w) => w.when_written(done),
            None => {
                let _ = done.send(());
            }
        }
    }

    /// Waits until everything handed to the writer is in the file (tests).
    #[cfg(test)]
    pub fn sync(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.when_written(tx);
        let _ = rx.blocking_recv();
    }
}

/// Percent-encodes a sub id for a record.
fn encode_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_id(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn record_line(sub_id: &str, change: &Change) -> String {
    let id = encode_id(sub_id);
    let rec = match change {
        Change::Reset => format!("R {id}"),
        Change::Mark { publisher, seq } => format!("M {id} {publisher} {seq}"),
        Change::Done { publisher, seq } => format!("D {id} {publisher} {seq}"),
    };
    format!("{:08x} {rec}\n", crc32fast::hash(rec.as_bytes()))
}

fn parse_line(line: &str) -> Result<(String, Change), &'static str> {
    let (crc, rec) = line.split_once(' ').ok_or("no checksum")?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field")?;
    if crc != crc32fast::hash(rec.as_bytes()) {
        return Err("checksum mismatch");
    }
    let parts: Vec<&str> = rec.split(' ').collect();
    let id = |s: &str| decode_id(s).ok_or("bad sub id");
    let num = |s: &str| s.parse::<u64>().map_err(|_| "bad number");
    match parts.as_slice() {
        ["R", sub] => Ok((id(sub)?, Change::Reset)),
        ["M", sub, p, s] => Ok((
            id(sub)?,
            Change::Mark {
                publisher: num(p)?,
                seq: num(s)?,
            },
        )),
        ["D", sub, p, s] => Ok((
            id(sub)?,
            Change::Done {
                publisher: num(p)?,
                seq: num(s)?,
            },
        )),
        _ => Err("unknown record"),
    }
}

type Loaded = (HashMap<String, SubscriptionBook>, File, File, u64);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BookmarkStoreError + '_ {
    move |source| BookmarkStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Locks, reads and replays the file; cuts off a torn last line.
fn load(path: &Path) -> Result<Loaded, BookmarkStoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let lock_file = lock_path(path);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(io_err(&lock_file))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(BookmarkStoreError::Locked {
                path: path.to_owned(),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(path)(e)),
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut books: HashMap<String, SubscriptionBook> = HashMap::new();
    let mut reader = BufReader::new(&file);
    let mut good_len: u64 = 0;
    let mut line_no = 0;
    let mut pending_error: Option<(usize, &'static str)> = None;
    loop {
        let mut buf = Vec::new();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if let Some((line, what)) = pending_error.take() {
            // A damaged line with more after it: not a torn tail.
            return Err(BookmarkStoreError::Corrupt {
                path: path.to_owned(),
                line,
                what,
            });
        }
        let complete = buf.last() == Some(&b'\n');
        let parsed = std::str::from_utf8(&buf)
            .map_err(|_| "not UTF-8")
            .and_then(|l| parse_line(l.trim_end_matches('\n')));
        match parsed {
            Ok((sub, change)) if complete => {
                books.entry(sub).or_default().apply(change);
                good_len += n as u64;
            }
            Ok(_) => pending_error = Some((line_no, "last record cut short")),
            Err(what) => pending_error = Some((line_no, what)),
        }
    }
    let size = file.metadata().map_err(io_err(path))?.len();
    if let Some((line, what)) = pending_error {
        tracing::warn!(path = %path.display(), line, what, "ignoring a torn last bookmark record");
        file.set_len(good_len).map_err(io_err(path))?;
    }
    books.retain(|_, b| !b.is_empty());
    let size = if size > good_len { good_len } else { size };
    Ok((books, file, lock, size))
}

/// Changes waiting for the writer thread, coalesced per subscription.
#[derive(Debug, Default)]
struct Pending {
    subs: HashMap<String, SubPending>,
    /// Told once everything before them is written.
    waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    stop: bool,
}

#[derive(Debug, Default)]
struct SubPending {
    reset: bool,
    marks: BTreeMap<u64, u64>,
    done: BTreeSet<(u64, u64)>,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer thread's handle; stopping it (on drop) writes what is pending first.
#[derive(Debug)]
struct Writer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(
        path: PathBuf,
        file: File,
        lock: File,
        fsync: bool,
        mirror: HashMap<String, SubscriptionBook>,
        size: u64,
    ) -> Writer {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bookmark-store".into())
            .spawn(move || {
                let mut w = FileWriter {
                    path,
                    file: Some(file),
                    _lock: lock,
                    fsync,
                    mirror,
                    size,
                    compacted_size: 0,
                };
                w.run(&s);
            })
            .ok();
        if thread.is_none() {
            tracing::error!(
                "cannot start the bookmark store's writer thread: bookmarks will not be saved"
            );
        }
        Writer { shared, thread }
    }

    /// Merges changes into the pending set. Holds the lock only to merge (no I/O under it).
    fn push(&self, sub_id: &str, changes: &[Change]) {
        let mut p = self.shared.lock();
        let entry = p.subs.entry(sub_id.to_owned()).or_default();
        for c in changes {
            match *c {
                Change::Reset => {
                    *entry = SubPending {
                        reset: true,
                        ..SubPending::default()
                    }
                }
                Change::Mark { publisher, seq } => {
                    let m = entry.marks.entry(publisher).or_insert(seq);
                    *m = (*m).max(seq);
                }
                Change::Done { publisher, seq } => {
                    entry.done.insert((publisher, seq));
                }
            }
        }
        drop(p);
        self.shared.cv.notify_one();
    }

    fn when_written(&self, done: tokio::sync::oneshot::Sender<()>) {
        self.shared.lock().waiters.push(done);
        self.shared.cv.notify_one();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct FileWriter {
    path: PathBuf,
    /// `None` after a write failed: nothing more is written.
    file: Option<File>,
    _lock: File,
    fsync: bool,
    /// What the file holds, to snapshot from.
    mirror: HashMap<String, SubscriptionBook>,
    size: u64,
    compacted_size: u64,
}

impl FileWriter {
    fn run(&mut self, shared: &Shared) {
        loop {
            let (work, waiters, stop) = {
                let mut p = shared.lock();
                while p.subs.is_empty() && p.waiters.is_empty() && !p.stop {
                    p = shared.cv.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                (
                    std::mem::take(&mut p.subs),
                    std::mem::take(&mut p.waiters),
                    p.stop,
                )
            };
            if !work.is_empty() {
                self.write(work);
            }
            for w in waiters {
                let _ = w.send(());
            }
            if stop && shared.lock().subs.is_empty() {
                return;
            }
        }
    }

    fn write(&mut self, work: HashMap<String, SubPending>) {
        let mut text = String::new();
        for (sub, p) in work {
            let mut changes = Vec::new();
            if p.reset {
                changes.push(Change::Reset);
            }
            changes.extend(p.done.iter().map(|(publisher, seq)| Change::Done {
                publisher: *publisher,
                seq: *seq,
            }));
            changes.extend(p.marks.iter().map(|(publisher, seq)| Change::Mark {
                publisher: *publisher,
                seq: *seq,
            }));
            let book = self.mirror.entry(sub.clone()).or_default();
            for c in &changes {
                book.apply(*c);
                text.push_str(&record_line(&sub, c));
            }
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let result = file.write_all(text.as_bytes()).and_then(|()| {
            if self.fsync {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), error = %e,
                "bookmark store write failed; no more bookmarks will be saved (a restart repeats messages, it never skips any)");
            self.file = None;
            return;
        }
        self.size += text.len() as u64;
        if self.size > (1 << 20).max(4 * self.compacted_size) {
            if let Err(e) = self.compact() {
                tracing::warn!(path = %self.path.display(), error = %e, "bookmark store compaction failed; appending on");
            }
        }
    }

    /// Rewrites the file as a snapshot of what it holds.
    fn compact(&mut self) -> std::io::Result<()> {
        self.mirror.retain(|_, b| !b.is_empty());
        let mut text = String::new();
        for (sub, book) in &self.mirror {
            for c in book.snapshot() {
                text.push_str(&record_line(sub, &c));
            }
        }
        let mut tmp_path = self.path.as_os_str().to_owned();
        tmp_path.push(".tmp");
        let tmp_path = PathBuf::from(tmp_path);
        {
            let mut tmp = File::create(&tmp_path)?;
            tmp.write_all(text.as_bytes())?;
            tmp.sync_all()?;
        }
        std::fs::rename(&tmp_path, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        self.size = text.len() as u64;
        self.compacted_size = self.size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_kind(dir: &tempfile::TempDir) -> BookmarkStoreKind {
        BookmarkStoreKind::File {
            path: dir.path().join("bm"),
            fsync: false,
        }
    }

    fn deliver_and_process(store: &mut BookmarkStore, sub: &str, bms: &[(u64, u64)]) {
        let mut book = store.take_book(sub);
        let mut locals = Vec::new();
        for bm in bms {
            locals.push(book.delivered(Some(*bm)).expect("new"));
        }
        let mut ch = Vec::new();
        book.discard_range(locals[0], *locals.last().expect("some"), &mut ch);
        store.persist(sub, &ch);
        store.put_book(sub, &book);
    }

    #[test]
    fn a_file_store_survives_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let kind = file_kind(&dir);
        {
            let mut s = BookmarkStore::open(&kind).expect("open");
            deliver_and_process(&mut s, "odd id\n%", &[(1, 5), (2, 9), (1, 6)]);
            deliver_and_process(&mut s, "other", &[(3, 1)]);
            s.reset("other");
            deliver_and_process(&mut s, "other", &[(3, 2)]);
            s.sync();
        }
        let s = BookmarkStore::open(&kind).expect("reopen");
        assert_eq!(s.most_recent("odd id\n%").as_deref(), Some("1|6|,2|9|"));
        assert_eq!(s.most_recent("other").as_deref(), Some("3|2|"));
        assert_eq!(s.most_recent("never"), None);
    }

    #[test]
    fn a_second_open_is_locked() {
        let dir = tempfile::tempdir().expect("dir");
        let kind = file_kind(&dir);
        let _first = BookmarkStore::open(&kind).expect("open");
        assert!(matches!(
            BookmarkStore::open(&kind),
            Err(BookmarkStoreError::Locked { .. })
        ));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_damage_elsewhere_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let kind = file_kind(&dir);
        let path = dir.path().join("bm");
        let good = record_line(
            "s",
            &Change::Mark {
                publisher: 1,
                seq: 5,
            },
        );
        let torn = &record_line(
            "s",
            &Change::Mark {
                publisher: 1,
                seq: 7,
            },
        )[..10];
        std::fs::write(&path, format!("{good}{torn}")).expect("write");
        {
            let s = BookmarkStore::open(&kind).expect("torn tail is fine");
            assert_eq!(s.most_recent("s").as_deref(), Some("1|5|"));
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            good,
            "cut off"
        );
        // A flipped digit in a record that is not the last one.
        let bad = good.replace("M s 1 5", "M s 1 9");
        std::fs::write(&path, format!("{bad}{good}")).expect("write");
        match BookmarkStore::open(&kind) {
            Err(BookmarkStoreError::Corrupt { line: 1, .. }) => {}
            other => panic!("expected Corrupt at line 1, got {other:?}"),
        }
    }

    #[test]
    fn the_file_is_compacted_and_still_correct() {
        let dir = tempfile::tempdir().expect("dir");
        let kind = file_kind(&dir);
        {
            let mut s = BookmarkStore::open(&kind).expect("open");
            for i in 1..=40_000u64 {
                deliver_and_process(&mut s, "s", &[(i % 3, i)]);
            }
            s.sync();
        }
        let len = std::fs::metadata(dir.path().join("bm"))
            .expect("meta")
            .len();
        assert!(len < 2 << 20, "compacted: {len} bytes");
        let s = BookmarkStore::open(&kind).expect("reopen");
        assert_eq!(
            s.most_recent("s").as_deref(),
            Some("0|39999|,1|40000|,2|39998|")
        );
    }

    #[test]
    fn ids_round_trip() {
        for id in ["plain", "with space", "100%", "é\n\t,|", ""] {
            assert_eq!(decode_id(&encode_id(id)).as_deref(), Some(id));
        }
    }
}
