//! Segment files in the data directory: names, listing, positional reads and writes, space
//! reservation and directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::ServerError;

const SEGMENT_PREFIX: &str = "txlog-";
const SEGMENT_SUFFIX: &str = ".seg";

/// The file name of the segment whose first record has LSN `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN a segment file name stands for; `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// The segment files of `dir` as (first LSN, path), oldest first. A missing directory has none.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ServerError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_err(dir, source)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        if let Some(lsn) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((lsn, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(out)
}

/// A [`ServerError::Io`] for `path`.
pub fn io_err(path: &Path, source: io::Error) -> ServerError {
    ServerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_once(file, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(unix)]
fn read_once(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_once(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// Writes all of `buf` at `offset`.
pub fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match write_once(file, buf, offset) {
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

#[cfg(unix)]
fn write_once(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, offset)
}

#[cfg(windows)]
fn write_once(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, buf, offset)
}

/// Reserves disk blocks for `file` up to `len` bytes, so that later writes below `len` cannot
/// fail for lack of space. On Linux this is `posix_fallocate` (real blocks, the file's size
/// grows to `len`, new bytes read as zeros); elsewhere the file is only extended (sparse), so
/// a full disk shows up at write time instead.
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    reserve_impl(file, len)
}

#[cfg(target_os = "linux")]
fn reserve_impl(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: a valid open descriptor, plain integer arguments.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve_impl(file: &File, len: u64) -> io::Result<()> {
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Whether an I/O error means the disk (or the process's file size limit, or a quota) has no
/// room: the kind of failure that goes away when space is freed.
pub fn is_out_of_space(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
        )
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::FileTooLarge
    }
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> Result<(), ServerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Directories cannot be fsynced here; creates and renames are as durable as the platform
/// makes them.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> Result<(), ServerError> {
    Ok(())
}

/// Opens a segment for reading and writing (not appending: writes are positional).
pub fn open_rw(path: &Path) -> Result<File, ServerError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        assert_eq!(segment_name(1), "txlog-00000000000000000001.seg");
        assert_eq!(
            parse_segment_name(&segment_name(987_654_321)),
            Some(987_654_321)
        );
        for other in [
            "txlog.amps",
            "txlog-1.seg",
            "txlog-0000000000000000000x.seg",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }

    #[test]
    fn reserve_grows_the_file_with_zeros_and_positional_io_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        reserve(&file, 4096).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 4096);
        write_all_at(&file, b"hello", 100).unwrap();
        let mut buf = [1u8; 8];
        assert_eq!(read_at(&file, &mut buf, 98).unwrap(), 8);
        assert_eq!(&buf, b"\0\0hello\0");
        let mut tail = [0u8; 16];
        assert_eq!(read_at(&file, &mut tail, 4090).unwrap(), 6);
    }

    #[test]
    fn out_of_space_errors_are_recognised() {
        assert!(is_out_of_space(&io::Error::from(
            io::ErrorKind::StorageFull
        )));
        #[cfg(unix)]
        assert!(is_out_of_space(&io::Error::from_raw_os_error(libc::EFBIG)));
        assert!(!is_out_of_space(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
    }
}
