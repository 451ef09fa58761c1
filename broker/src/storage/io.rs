//! The file-I/O seam: every byte the storage engine writes, syncs, allocates or maps goes through
//! [`FileIo`] / [`IoFile`]. [`RealIo`] is the production implementation (positional writes, `fdatasync`,
//! `fallocate`, read-only `mmap`); [`FaultyIo`] wraps it and injects ENOSPC, EIO and short (torn) writes
//! so tests can prove the engine's behaviour under failing disks.
//!
//! Invariant: implementations never retry a failed call; the error goes straight back to the engine,
//! which decides (an fsync failure stops the log for good).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::mmap;

/// One open file. Positional I/O only, so one handle is shared by writers, the flusher and mappers.
pub trait IoFile: Send + Sync + Debug {
    /// Writes all of `bufs`, back to back, starting at `pos`. On error some prefix may have been written.
    fn write_all_vectored_at(&self, bufs: &[&[u8]], pos: u64) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `pos`.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file at least `len` bytes long with blocks allocated (no sparse holes).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Sets the length. Only for files that are never mapped (indexes, metadata).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// A read-only shared map of the first `len` bytes (`len` <= the file length).
    fn map(&self, len: usize) -> io::Result<Bytes>;
}

/// Directory-level operations and opening files.
pub trait FileIo: Send + Sync + Debug {
    /// Opens `path` read-write, creating it when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs a directory so that creations, renames and removals in it are durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The file names (not paths) in a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

#[derive(Debug)]
struct RealFile {
    file: File,
}

/// Writes all of `bufs` at `pos` with `pwritev`, resuming after partial writes.
fn pwritev_all(file: &File, bufs: &[&[u8]], mut pos: u64) -> io::Result<()> {
    // Most kernels accept at most 1024 iovecs per call.
    const IOV_MAX: usize = 1024;
    let mut idx = 0; // first buffer not fully written
    let mut skip = 0; // bytes of bufs[idx] already written
    while idx < bufs.len() {
        let end = (idx + IOV_MAX).min(bufs.len());
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(end - idx);
        for (i, b) in bufs[idx..end].iter().enumerate() {
            let b = if i == 0 { &b[skip..] } else { &b[..] };
            slices.push(IoSlice::new(b));
        }
        let mut n = match rustix::io::pwritev(file, &slices, pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote 0 bytes",
                ))
            }
            Ok(n) => n,
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(e.into()),
        };
        pos += n as u64;
        while n > 0 && idx < bufs.len() {
            let left = bufs[idx].len() - skip;
            if n >= left {
                n -= left;
                idx += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
        while idx < bufs.len() && bufs[idx].len() == skip {
            idx += 1;
            skip = 0;
        }
    }
    Ok(())
}

impl IoFile for RealFile {
    fn write_all_vectored_at(&self, bufs: &[&[u8]], pos: u64) -> io::Result<()> {
        match bufs {
            [] => Ok(()),
            [one] => self.file.write_all_at(one, pos),
            _ => pwritev_all(&self.file, bufs, pos),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.file.metadata()?.len() >= len {
            return Ok(());
        }
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            // Some file systems cannot preallocate; a plain extension still never SIGBUSes us because we
            // write with pwrite and read only what was written.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                self.file.set_len(len)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn map(&self, len: usize) -> io::Result<Bytes> {
        mmap::map_readonly(&self.file, len)
    }
}

impl FileIo for RealIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile { file }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }
}

/// What [`FaultyIo`] should break. All switches are shared by every file it opened.
#[derive(Debug, Default)]
pub struct Faults {
    /// Bytes that writes may still place before failing with ENOSPC (`u64::MAX` = unlimited). A write that
    /// crosses the budget writes the part that fits (a short, torn write) and then fails.
    pub write_budget: AtomicU64,
    /// Fail every `sync_data` with EIO.
    pub fail_sync: AtomicBool,
    /// Fail every `allocate` with ENOSPC.
    pub fail_allocate: AtomicBool,
    /// Counts `sync_data` calls (successful or not).
    pub syncs: AtomicU64,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults {
            write_budget: AtomicU64::new(u64::MAX),
            ..Default::default()
        })
    }
}

/// A [`FileIo`] over the real file system that injects the failures described by its [`Faults`].
#[derive(Debug, Clone)]
pub struct FaultyIo {
    pub faults: Arc<Faults>,
}

impl FaultyIo {
    pub fn new() -> FaultyIo {
        FaultyIo {
            faults: Faults::new(),
        }
    }
}

impl Default for FaultyIo {
    fn default() -> Self {
        FaultyIo::new()
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn IoFile>,
    faults: Arc<Faults>,
    path: PathBuf,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl IoFile for FaultyFile {
    fn write_all_vectored_at(&self, bufs: &[&[u8]], pos: u64) -> io::Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let budget = self.faults.write_budget.load(Ordering::SeqCst);
        if total <= budget {
            if budget != u64::MAX {
                self.faults
                    .write_budget
                    .store(budget - total, Ordering::SeqCst);
            }
            return self.inner.write_all_vectored_at(bufs, pos);
        }
        // Torn write: place what fits, then fail like a full disk.
        self.faults.write_budget.store(0, Ordering::SeqCst);
        let mut left = budget as usize;
        let mut at = pos;
        for b in bufs {
            if left == 0 {
                break;
            }
            let n = b.len().min(left);
            self.inner.write_all_vectored_at(&[&b[..n]], at)?;
            at += n as u64;
            left -= n;
        }
        tracing::debug!(path = %self.path.display(), "injected ENOSPC after a short write");
        Err(enospc())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.faults.fail_allocate.load(Ordering::SeqCst) && self.inner.len()? < len {
            return Err(enospc());
        }
        self.inner.allocate(len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn map(&self, len: usize) -> io::Result<Bytes> {
        self.inner.map(len)
    }
}

impl FileIo for FaultyIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(FaultyFile {
            inner: RealIo.open(path, create)?,
            faults: self.faults.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealIo.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealIo.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        RealIo.sync_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealIo.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        RealIo.list_dir(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pwritev_writes_every_buffer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = RealIo.open(&dir.path().join("f"), true).unwrap();
        let a = vec![1u8; 3];
        let b: Vec<u8> = vec![];
        let c = vec![2u8; 5000];
        f.write_all_vectored_at(&[&a, &b, &c], 10).unwrap();
        let mut got = vec![0u8; 5003];
        f.read_exact_at(&mut got, 10).unwrap();
        assert_eq!(&got[..3], &a[..]);
        assert!(got[3..].iter().all(|&x| x == 2));
    }

    #[test]
    fn faulty_io_tears_a_write_at_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        io.faults.write_budget.store(4, Ordering::SeqCst);
        let f = io.open(&dir.path().join("f"), true).unwrap();
        f.allocate(16).unwrap();
        let e = f
            .write_all_vectored_at(&[&[9u8; 3], &[8u8; 3]], 0)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        let mut got = [0u8; 6];
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, [9, 9, 9, 8, 0, 0]);
        io.faults.fail_sync.store(true, Ordering::SeqCst);
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
    }
}
