//! Output files that appear only when complete: write a temporary file in the destination's
//! directory, fsync it, rename it over the destination, fsync the directory. A failure removes
//! the temporary file; a crash leaves either the old file or the new one at the destination.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hanzo_kms_core::{Error, ErrorKind, Result};

pub struct AtomicOutput {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    committed: bool,
    /// A `BulkWriter` was handed out and not finished: committing would lose its buffer.
    bulk_open: std::sync::atomic::AtomicBool,
}

impl AtomicOutput {
    /// `private`: create the file owner-only (for plaintext).
    pub fn create(dest: &Path, private: bool) -> Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{} is not a file path", dest.display())))?;
        let mut suffix = [0u8; 6];
        hanzo_kms_crypto::rng::fill(&mut suffix)?;
        let tmp = dir.join(format!(
            ".{}.hkms-tmp-{}",
            name.to_string_lossy(),
            hex::encode(suffix)
        ));
        let mut opts = OpenOptions::new();
        opts.write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 });
        let file = opts.open(&tmp).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("creating a temporary file in {}", dir.display()),
            )
            .with_source(e)
        })?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            file,
            committed: false,
            bulk_open: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// A writer for bulk output. It bypasses the page cache with O_DIRECT in aligned blocks
    /// where the filesystem allows it (so a large output does not queue gigabytes of dirty pages
    /// for the final fsync), and writes through the page cache otherwise.
    pub fn bulk_writer(&self) -> BulkWriter<'_> {
        // Reopen the very file we created (through our own descriptor, not its path, which
        // someone sharing the directory could replace), with O_DIRECT.
        use std::os::fd::AsRawFd;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .ok();
        self.bulk_open
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut raw = vec![0u8; BULK_BUF + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        if direct.is_none() {
            raw = Vec::new();
        }
        BulkWriter {
            file: &self.file,
            open: &self.bulk_open,
            direct,
            raw,
            start,
            len: 0,
            offset: 0,
        }
    }

    /// Make the output durable and visible.
    pub fn commit(mut self) -> Result<()> {
        let io = |what: String, e: std::io::Error| Error::new(ErrorKind::Io, what).with_source(e);
        if self.bulk_open.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::internal(
                "an output writer was not finished; nothing was committed",
            ));
        }
        self.file
            .sync_all()
            .map_err(|e| io(format!("syncing {}", self.tmp.display()), e))?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| io(format!("renaming into {}", self.dest.display()), e))?;
        self.committed = true;
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(format!("syncing directory {}", dir.display()), e))?;
        }
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// O_DIRECT alignment (the logical block size is at most this on the filesystems we meet).
const ALIGN: usize = 4096;
/// Bytes gathered before each direct write.
const BULK_BUF: usize = 8 << 20;

/// See [`AtomicOutput::bulk_writer`]. Call [`BulkWriter::finish`] before committing.
pub struct BulkWriter<'a> {
    file: &'a File,
    open: &'a std::sync::atomic::AtomicBool,
    direct: Option<File>,
    raw: Vec<u8>,
    start: usize,
    len: usize,
    offset: u64,
}

impl BulkWriter<'_> {
    /// Write out whole blocks with O_DIRECT; on any failure, fall back to the page cache.
    fn drain_blocks(&mut self) -> std::io::Result<()> {
        let blocks = self.len / ALIGN * ALIGN;
        if blocks == 0 {
            return Ok(());
        }
        let chunk = &self.raw[self.start..self.start + blocks];
        let written = match &self.direct {
            Some(d) => d.write_all_at(chunk, self.offset).is_ok(),
            None => false,
        };
        if !written {
            // Fall back for good: write everything gathered through the page cache.
            self.direct = None;
            let all = &self.raw[self.start..self.start + self.len];
            self.file.write_all_at(all, self.offset)?;
            self.offset += self.len as u64;
            self.len = 0;
            return Ok(());
        }
        self.offset += blocks as u64;
        self.raw
            .copy_within(self.start + blocks..self.start + self.len, self.start);
        self.len -= blocks;
        Ok(())
    }

    /// Write whatever remains (the unaligned tail through the page cache).
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.direct.is_some() {
            self.drain_blocks()?;
            let tail = &self.raw[self.start..self.start + self.len];
            self.file.write_all_at(tail, self.offset)?;
        }
        self.open.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl Write for BulkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.direct.is_none() {
            let n = self.file.write_at(buf, self.offset)?;
            self.offset += n as u64;
            return Ok(n);
        }
        let room = BULK_BUF - self.len;
        let n = buf.len().min(room);
        self.raw[self.start + self.len..self.start + self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        if self.len == BULK_BUF {
            self.drain_blocks()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
