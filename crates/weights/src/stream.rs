//! Streaming encryption and decryption (`Read` → `Write`), and a seekable decrypting reader.
//!
//! Streams run as a three-stage pipeline: a reader thread fills batches of segments, the calling
//! thread seals or opens each batch on `threads` workers, and a writer thread drains them. At most
//! a few batches exist at once, each `2 × threads` segments, so memory is bounded by
//! the segment size times the number of threads, whatever the file size.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use hanzo_kms_core::weights::{Header, Layout, Parse, TAG_LEN};
use hanzo_kms_core::{Error, ErrorKind, Result};

use crate::cipher::FileCipher;

/// Segments per batch, per worker thread.
const SEGMENTS_PER_THREAD: usize = 2;

/// A batch read from the input: its first segment's index, bytes, and whether it is the last.
struct Batch {
    first: u64,
    bytes: Vec<u8>,
    last: bool,
}

/// Encrypt `input` to `output`: writes `header_bytes`, then the segments. Returns the number of
/// plaintext bytes. `progress` is called with the plaintext bytes done so far.
pub fn encrypt_stream<R, W>(
    cipher: &FileCipher,
    header_bytes: &[u8],
    input: R,
    mut output: W,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64>
where
    R: Read + Send,
    W: Write + Send,
{
    output
        .write_all(header_bytes)
        .map_err(|e| io_error("writing", e))?;
    let s = cipher.segment_size() as usize;
    let threads = clamp_threads(threads);
    let batch_segments = threads * SEGMENTS_PER_THREAD;
    let body_len = pipeline(
        input,
        output,
        s,
        batch_segments,
        |batch: &Batch, out: &mut Vec<u8>| {
            let n_full = batch.bytes.len() / s;
            let rem = batch.bytes.len() % s;
            let segs = if batch.bytes.is_empty() {
                1
            } else {
                n_full + usize::from(rem > 0)
            };
            out.resize(batch.bytes.len() + segs * TAG_LEN, 0);
            let jobs = if batch.bytes.is_empty() {
                vec![(batch.first, true, &batch.bytes[..], &mut out[..])]
            } else {
                batch
                    .bytes
                    .chunks(s)
                    .zip(out.chunks_mut(s + TAG_LEN))
                    .enumerate()
                    .map(|(k, (p, c))| (batch.first + k as u64, batch.last && k + 1 == segs, p, c))
                    .collect()
            };
            cipher.run(jobs, threads, true)?;
            progress(batch.first * s as u64 + batch.bytes.len() as u64);
            Ok(())
        },
    )?;
    Layout::from_body(cipher.segment_size(), body_len).map(|l| l.plaintext_len)
}

/// Decrypt the segments in `input` (positioned after the header) to `output`. Returns the
/// number of plaintext bytes. On error, `output` may hold a prefix of the plaintext: callers
/// writing files must discard it (the CLI writes to a temporary file and removes it).
pub fn decrypt_stream<R, W>(
    cipher: &FileCipher,
    input: R,
    output: W,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64>
where
    R: Read + Send,
    W: Write + Send,
{
    let s = cipher.segment_size() as usize;
    let full = s + TAG_LEN;
    let threads = clamp_threads(threads);
    let batch_segments = threads * SEGMENTS_PER_THREAD;
    pipeline(
        input,
        output,
        full,
        batch_segments,
        |batch: &Batch, out: &mut Vec<u8>| {
            if batch.bytes.is_empty() {
                // No segments at all (the body is missing or was cut at a batch boundary).
                return Err(Error::authentication_failed());
            }
            let segs = batch.bytes.len().div_ceil(full);
            let last_len = batch.bytes.len() - (segs - 1) * full;
            if !batch.last && last_len != full {
                return Err(Error::internal("a batch ended inside a segment"));
            }
            if last_len < TAG_LEN
                || (batch.last && last_len == TAG_LEN && (batch.first > 0 || segs > 1))
            {
                return Err(Error::authentication_failed());
            }
            out.resize(batch.bytes.len() - segs * TAG_LEN, 0);
            let jobs = batch
                .bytes
                .chunks(full)
                .zip(out.chunks_mut(s).chain(std::iter::once(&mut [][..])))
                .enumerate()
                .take(segs)
                .map(|(k, (c, p))| (batch.first + k as u64, batch.last && k + 1 == segs, c, p))
                .collect();
            if let Err(e) = cipher.run(jobs, threads, false) {
                out.fill(0);
                return Err(e);
            }
            progress(batch.first * s as u64 + out.len() as u64);
            Ok(())
        },
    )
}

/// The most worker threads a stream or reader uses, whatever is asked: it bounds memory
/// (`2 × threads` segments per batch) and keeps the arithmetic far from overflow.
pub const MAX_THREADS: usize = 256;

fn clamp_threads(threads: usize) -> usize {
    threads.clamp(1, MAX_THREADS)
}

/// Buffers in flight per pipeline side: one being filled, one queued, one being processed.
const POOL: usize = 3;

/// The first size of an input buffer; it doubles, up to a batch, while the input lasts.
const FIRST_READ: usize = 64 * 1024;

/// Reader thread → `transform` on this thread → writer thread. Input is read in batches of
/// `segments` segments of `stride` bytes each; `Batch::first` is the batch's first segment index.
/// Buffers are recycled through pools, so memory is bounded by `POOL` input and `POOL` output
/// buffers whatever the file size; and a buffer grows only as far as the input fills it, so a
/// small file under large segments costs about its own size, not `POOL` batches.
/// Returns the number of bytes written.
fn pipeline<R, W, F>(
    mut input: R,
    mut output: W,
    stride: usize,
    segments: usize,
    transform: F,
) -> Result<u64>
where
    R: Read + Send,
    W: Write + Send,
    F: Fn(&Batch, &mut Vec<u8>) -> Result<()>,
{
    let batch_len = stride * segments;
    let (to_work, from_reader): (SyncSender<Result<Batch>>, Receiver<Result<Batch>>) =
        sync_channel(1);
    let (to_writer, from_work): (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) = sync_channel(1);
    let (in_free, in_pool) = sync_channel::<Vec<u8>>(POOL + 1);
    let (out_free, out_pool) = sync_channel::<Vec<u8>>(POOL + 1);
    for _ in 0..POOL {
        let _ = in_free.send(Vec::new());
        let _ = out_free.send(Vec::new());
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut first = 0u64;
            let mut fill = |buf: Option<Vec<u8>>| match buf {
                Some(mut b) => read_full(&mut input, batch_len, &mut b).map(|()| b),
                None => Err(Error::internal("the pipeline stopped")),
            };
            let mut pending = match fill(in_pool.recv().ok()) {
                Ok(b) => b,
                Err(e) => {
                    let _ = to_work.send(Err(e));
                    return;
                }
            };
            loop {
                // Read one batch ahead: a batch is the last when nothing follows it.
                let next = if pending.len() < batch_len {
                    Vec::new()
                } else {
                    match fill(in_pool.recv().ok()) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = to_work.send(Err(e));
                            return;
                        }
                    }
                };
                let last = next.is_empty();
                let batch = Batch {
                    first,
                    bytes: std::mem::replace(&mut pending, next),
                    last,
                };
                if to_work.send(Ok(batch)).is_err() || last {
                    return;
                }
                first += segments as u64;
            }
        });
        let writer = scope.spawn(move || -> Result<u64> {
            let mut written = 0u64;
            for chunk in from_work {
                output
                    .write_all(&chunk)
                    .map_err(|e| io_error("writing", e))?;
                written += chunk.len() as u64;
                let _ = out_free.send(chunk);
            }
            output.flush().map_err(|e| io_error("writing", e))?;
            Ok(written)
        });
        let mut result = Ok(());
        let mut saw_last = false;
        for batch in from_reader {
            let step = batch.and_then(|b| {
                saw_last |= b.last;
                let mut out = out_pool
                    .recv()
                    .map_err(|_| Error::internal("the writer stopped"))?;
                out.clear();
                let r = transform(&b, &mut out);
                let _ = in_free.send(b.bytes);
                r.map(|()| out)
            });
            match step {
                Ok(bytes) => {
                    if to_writer.send(bytes).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(to_writer);
        drop(in_free);
        let _ = reader.join();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the writer thread panicked")));
        result?;
        written
    })
}

/// Read into `buf` until `len` bytes or end of input. The buffer grows (doubling from
/// [`FIRST_READ`], never past `len`) only while the input fills it.
fn read_full<R: Read>(r: &mut R, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let grown = filled.saturating_mul(2).clamp(FIRST_READ.min(len), len);
            buf.resize(grown, 0);
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("reading", e)),
        }
    }
    buf.truncate(filled);
    Ok(())
}

fn io_error(doing: &str, e: io::Error) -> Error {
    Error::new(ErrorKind::Io, doing.to_owned()).with_source(e)
}

/// Positional reads, for random access without moving a shared cursor.
pub trait ReadAt: Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = self
            .get(start..start.saturating_add(buf.len()))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// A `Read + Seek` view of the plaintext of an encrypted model file. Each read decrypts only the
/// segments it covers (up to `threads` at a time, in parallel), so reading a byte range reads
/// and decrypts only that range's segments. Memory: `threads` segments.
pub struct DecryptingReader<S: ReadAt> {
    src: S,
    cipher: FileCipher,
    layout: Layout,
    body_offset: u64,
    threads: usize,
    pos: u64,
    /// Plaintext of segments `window.0 .. window.1`.
    window: (u64, u64),
    buf: Vec<u8>,
    decrypted: AtomicU64,
}

impl<S: ReadAt> DecryptingReader<S> {
    /// A reader over `src`, whose header (already parsed and checked via `cipher`) is
    /// `header_len` bytes long.
    pub fn new(
        src: S,
        header: &Header,
        header_len: u64,
        cipher: FileCipher,
        threads: usize,
    ) -> Result<Self> {
        let size = src.size().map_err(|e| io_error("reading", e))?;
        let body = size
            .checked_sub(header_len)
            .ok_or_else(Error::authentication_failed)?;
        let layout = header.layout(body)?;
        let mut reader = Self {
            src,
            cipher,
            layout,
            body_offset: header_len,
            threads: clamp_threads(threads),
            pos: 0,
            window: (0, 0),
            buf: Vec::new(),
            decrypted: AtomicU64::new(0),
        };
        // Authenticate the file's end before releasing anything: the final segment must open
        // with the last-segment flag. A file cut at a segment boundary or extended fails here.
        let last = layout.segments - 1;
        reader.load(last, last + 1)?;
        Ok(reader)
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.layout.plaintext_len
    }

    pub fn is_empty(&self) -> bool {
        self.layout.plaintext_len == 0
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many segments have been decrypted so far (for tests and statistics).
    pub fn segments_decrypted(&self) -> u64 {
        self.decrypted.load(Ordering::Relaxed)
    }

    /// Decrypt plaintext bytes `[offset, offset + len)` into a new buffer.
    pub fn read_range(&mut self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.layout.plaintext_len)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "range {offset}+{len} is outside the plaintext ({} bytes)",
                    self.layout.plaintext_len
                ))
            })?;
        let mut out = vec![0u8; (end - offset) as usize];
        self.pos = offset;
        let mut filled = 0;
        while filled < out.len() {
            let n = self.fill(&mut out[filled..])?;
            if n == 0 {
                return Err(Error::authentication_failed());
            }
            filled += n;
        }
        Ok(out)
    }

    /// Copy plaintext at the current position into `out`, decrypting as needed.
    fn fill(&mut self, out: &mut [u8]) -> Result<usize> {
        if self.pos >= self.layout.plaintext_len || out.is_empty() {
            return Ok(0);
        }
        let s = self.layout.segment_size;
        let seg = self.pos / s;
        if !(self.window.0..self.window.1).contains(&seg) {
            let want_end = (self.pos + out.len() as u64).min(self.layout.plaintext_len);
            let segs = self.layout.segments_for(self.pos, want_end);
            let last = segs.end.min(segs.start + self.threads as u64);
            self.load(segs.start, last)?;
        }
        let offset_in_window = (self.pos - self.window.0 * s) as usize;
        let n = out.len().min(self.buf.len() - offset_in_window);
        out[..n].copy_from_slice(&self.buf[offset_in_window..offset_in_window + n]);
        self.pos += n as u64;
        Ok(n)
    }

    /// Decrypt segments `[first, end)` into the window, in parallel.
    fn load(&mut self, first: u64, end: u64) -> Result<()> {
        self.window = (0, 0);
        let full = self.layout.segment_size + TAG_LEN as u64;
        let ct_start = self.body_offset + first * full;
        let ct_len: u64 = (first..end)
            .map(|i| self.layout.plaintext_len_of(i) + TAG_LEN as u64)
            .sum();
        let pt_len: u64 = (first..end).map(|i| self.layout.plaintext_len_of(i)).sum();
        let mut ct = vec![0u8; ct_len as usize];
        self.src
            .read_exact_at(&mut ct, ct_start)
            .map_err(|e| io_error("reading the encrypted file", e))?;
        self.buf.clear();
        self.buf.resize(pt_len as usize, 0);
        let s = self.layout.segment_size as usize;
        let n = self.layout.segments;
        let jobs = ct
            .chunks(s + TAG_LEN)
            .zip(self.buf.chunks_mut(s).chain(std::iter::once(&mut [][..])))
            .enumerate()
            .take((end - first) as usize)
            .map(|(k, (c, p))| {
                let i = first + k as u64;
                (i, i + 1 == n, c, p)
            })
            .collect();
        self.cipher
            .run(jobs, self.threads, false)
            .inspect_err(|_| self.buf.fill(0))?;
        self.decrypted.fetch_add(end - first, Ordering::Relaxed);
        self.window = (first, end);
        Ok(())
    }
}

impl<S: ReadAt> Read for DecryptingReader<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.fill(out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl<S: ReadAt> Seek for DecryptingReader<S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.layout.plaintext_len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = target;
        Ok(target)
    }
}

/// Turn an `io::Error` from a [`DecryptingReader`] back into the error it carries.
pub fn unwrap_io(e: io::Error) -> Error {
    if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return io_error("reading", e);
    }
    match e.into_inner().map(|b| b.downcast::<Error>()) {
        Some(Ok(err)) => *err,
        _ => Error::internal("reader error"),
    }
}

/// Read a model file's header from the start of `input`, consuming exactly the header's bytes
/// plus at most what one read returned past it; returns the header, its length and any bytes
/// read past it (the start of the body), so that a stream need not seek.
///
/// Fewer than 6 bytes, or the wrong magic, is "not a Hanzo KMS model file"; a cut or
/// malformed header is "authentication failed".
pub fn read_header<R: Read>(input: &mut R) -> Result<(Header, usize, Vec<u8>)> {
    let mut buf = Vec::with_capacity(512);
    let mut want = 64usize;
    loop {
        let have = buf.len();
        buf.resize(want, 0);
        let mut filled = have;
        while filled < want {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("reading the header", e)),
            }
        }
        buf.truncate(filled);
        match Header::parse_prefix(&buf)? {
            Parse::Done(h, n) => {
                let rest = buf.split_off(n);
                return Ok((h, n, rest));
            }
            Parse::NeedMore(n) if filled == want => want = n.max(want),
            Parse::NeedMore(_) if filled < 6 => {
                return Err(hanzo_kms_core::weights::not_a_model_file());
            }
            Parse::NeedMore(_) => return Err(Error::authentication_failed()),
        }
    }
}
