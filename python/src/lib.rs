//! `hanzo_kms._native`: the half of the Python package that runs in Rust.
//!
//! Everything that touches a data key or plaintext weights is here, so that the data key never
//! becomes a Python object and the segment cipher runs on all cores with the GIL released:
//!
//! - [`EncryptedFile`]: a model file's header, parsed (nothing decrypted yet). Its `header`
//!   bytes go to the server's `unwrap` call; the server's answer goes to `EncryptedFile::unlock`.
//! - [`PlainView`]: the unlocked file. Reads any plaintext byte range, decrypting only the
//!   segments that cover it, in parallel, straight into a new NumPy array.
//! - [`SealingWriter`]: writes a new model file from plaintext chunks (the server's `datakey`
//!   answer gives its header and data key), sealing segments in parallel, to a temporary file in
//!   the destination's directory that is renamed into place only when complete.
//!
//! The answers of `unwrap` and `datakey` carry the data key. Python reads them into a
//! `bytearray`, which is handed here, copied into wiped memory and then zeroed in place.
//!
//! This crate writes no `unsafe` code (PyO3's macros expand to `unsafe` blocks of their own).

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use hanzo_kms_core::weights::{Header, Layout, TAG_LEN};
use hanzo_kms_core::{Error, ErrorKind, Result, SecretKey32};
use hanzo_kms_weights::FileCipher;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Deserialize;
use zeroize::Zeroizing;

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EncryptedFile>()?;
    m.add_class::<PlainView>()?;
    m.add_class::<SealingWriter>()?;
    m.add_function(wrap_pyfunction!(default_threads, m)?)?;
    Ok(())
}

/// The number of worker threads used by default: the available cores.
#[pyfunction]
fn default_threads() -> usize {
    hanzo_kms_weights::default_threads()
}

/// A model file whose header has been read and parsed. Nothing is decrypted yet.
#[pyclass(frozen, module = "hanzo_kms._native")]
pub struct EncryptedFile {
    path: PathBuf,
    file: File,
    header: Header,
    header_bytes: Vec<u8>,
}

#[pymethods]
impl EncryptedFile {
    /// Open `path` and parse its header. Not a model file: `invalid_argument`; a malformed or
    /// cut header: `authentication_failed`.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        py.detach(|| open_encrypted(&path))
            .map_err(|e| to_py(py, e))
    }

    /// The header's bytes, as the server's `unwrap` call takes them.
    #[getter]
    fn header<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.header_bytes)
    }

    /// The model key the file names, e.g. `model:acme:gpt4`.
    #[getter]
    fn key_name(&self) -> &str {
        &self.header.key_name
    }

    /// The version of the model key that wrapped the file's data key.
    #[getter]
    fn key_version(&self) -> u32 {
        self.header.key_version
    }

    /// The model id bound into the header, e.g. `acme:gpt4`.
    #[getter]
    fn model_id(&self) -> &str {
        &self.header.model_id
    }

    /// The header's free-form metadata (authenticated, not encrypted).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.header.metadata)
    }

    /// Plaintext bytes per segment.
    #[getter]
    fn segment_size(&self) -> u32 {
        self.header.segment_size
    }

    /// Unlock the file with the server's `unwrap` answer (a `bytearray` holding its JSON body,
    /// zeroed here once read). Checks the data key against the header's commitment, and with
    /// `model_id` that the file was made for that model, then authenticates the final segment
    /// (so a truncated or extended file fails now). Every failure is `authentication_failed`.
    #[pyo3(signature = (answer, model_id=None, threads=None))]
    fn unlock(
        &self,
        py: Python<'_>,
        answer: &Bound<'_, PyAny>,
        model_id: Option<String>,
        threads: Option<usize>,
    ) -> PyResult<PlainView> {
        let dek = take_data_key(py, answer)?;
        let file = self
            .file
            .try_clone()
            .map_err(|e| to_py(py, io_error(&self.path, e)))?;
        let threads = threads_or_default(threads);
        py.detach(|| {
            PlainView::new(
                file,
                &self.header,
                &self.header_bytes,
                &dek,
                model_id,
                threads,
            )
        })
        .map_err(|e| to_py(py, e))
    }
}

/// The plaintext of an unlocked model file, read by byte range.
#[pyclass(frozen, module = "hanzo_kms._native")]
pub struct PlainView {
    file: File,
    cipher: FileCipher,
    layout: Layout,
    header_len: u64,
    threads: usize,
    decrypted: AtomicU64,
}

#[pymethods]
impl PlainView {
    /// Plaintext length in bytes.
    fn __len__(&self) -> usize {
        usize::try_from(self.layout.plaintext_len).unwrap_or(usize::MAX)
    }

    /// Plaintext bytes per segment.
    #[getter]
    fn segment_size(&self) -> u64 {
        self.layout.segment_size
    }

    /// Number of segments in the file.
    #[getter]
    fn segments(&self) -> u64 {
        self.layout.segments
    }

    /// How many segments this view has decrypted so far (the final one, at unlock, included).
    #[getter]
    fn segments_decrypted(&self) -> u64 {
        self.decrypted.load(Ordering::Relaxed)
    }

    /// Decrypt plaintext bytes `[start, end)` into a new NumPy `uint8` array, decrypting only
    /// the segments that cover them, on all cores with the GIL released. On failure nothing is
    /// returned (the buffer is wiped and freed).
    fn read<'py>(
        &self,
        py: Python<'py>,
        start: u64,
        end: u64,
    ) -> PyResult<Bound<'py, PyArray1<u8>>> {
        if start > end || end > self.layout.plaintext_len {
            return Err(to_py(
                py,
                Error::invalid(format!(
                    "range {start}..{end} is outside the plaintext ({} bytes)",
                    self.layout.plaintext_len
                )),
            ));
        }
        let len = usize::try_from(end - start)
            .map_err(|_| to_py(py, Error::invalid("the range is too large for memory")))?;
        // NumPy allocates it zeroed by calloc, so its pages are first touched by the workers.
        let array = PyArray1::<u8>::zeros(py, len, false);
        {
            let mut rw = array.readwrite();
            let out = rw
                .as_slice_mut()
                .map_err(|_| to_py(py, Error::internal("a new array is not contiguous")))?;
            py.detach(|| self.read_into(start, out))
                .map_err(|e| to_py(py, e))?;
        }
        Ok(array)
    }

    /// The safetensors header: `(tensors, metadata_json)`, where each tensor is `(name, dtype,
    /// shape, start, end)` with absolute plaintext offsets, in order of offset, and
    /// `metadata_json` is the `__metadata__` entry as JSON text (or None). Decrypts only the
    /// segments that hold the header.
    #[allow(clippy::type_complexity)]
    fn safetensors_index(
        &self,
        py: Python<'_>,
    ) -> PyResult<(Vec<(String, String, Vec<u64>, u64, u64)>, Option<String>)> {
        py.detach(|| self.index()).map_err(|e| to_py(py, e))
    }
}

impl PlainView {
    fn new(
        file: File,
        header: &Header,
        header_bytes: &[u8],
        dek: &SecretKey32,
        model_id: Option<String>,
        threads: usize,
    ) -> Result<Self> {
        let cipher = FileCipher::open(header, dek, model_id.as_deref())?;
        let size = file
            .metadata()
            .map_err(|e| Error::new(ErrorKind::Io, "reading the model file").with_source(e))?
            .len();
        let header_len = header_bytes.len() as u64;
        let body = size
            .checked_sub(header_len)
            .ok_or_else(Error::authentication_failed)?;
        let layout = header.layout(body)?;
        let view = Self {
            file,
            cipher,
            layout,
            header_len,
            threads,
            decrypted: AtomicU64::new(0),
        };
        // Authenticate the file's end before releasing anything: the final segment must open
        // with the last-segment flag, so a file cut at a segment boundary or extended fails here.
        let last = layout.segments - 1;
        let mut scratch = Zeroizing::new(vec![0u8; layout.plaintext_len_of(last) as usize]);
        view.decrypt_pieces(&mut [(last, &mut scratch[..])], last * layout.segment_size)?;
        Ok(view)
    }

    /// Decrypt plaintext `[start, start + out.len())` into `out`. On failure `out` is zeroed.
    fn read_into(&self, start: u64, out: &mut [u8]) -> Result<()> {
        let end = start + out.len() as u64;
        let segs = self.layout.segments_for(start, end);
        if segs.is_empty() {
            return Ok(());
        }
        let s = self.layout.segment_size;
        let mut pieces: Vec<(u64, &mut [u8])> =
            Vec::with_capacity((segs.end - segs.start) as usize);
        let mut rest = &mut *out;
        for i in segs {
            let seg_start = i * s;
            let seg_end = seg_start + self.layout.plaintext_len_of(i);
            let take = (end.min(seg_end) - start.max(seg_start)) as usize;
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(take);
            pieces.push((i, piece));
            rest = tail;
        }
        let threads = self.threads.min(pieces.len()).max(1);
        let result = if threads == 1 {
            self.decrypt_pieces(&mut pieces, start)
        } else {
            let per = pieces.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = pieces
                    .chunks_mut(per)
                    .map(|run| scope.spawn(move || self.decrypt_pieces(run, start)))
                    .collect();
                let mut result = Ok(());
                for h in handles {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(Error::internal("a worker thread panicked")));
                    if result.is_ok() {
                        result = r;
                    }
                }
                result
            })
        };
        drop(pieces);
        if result.is_err() {
            out.fill(0);
        }
        result
    }

    /// Decrypt each `(segment, destination)`; a destination shorter than its segment takes the
    /// part of the segment at or after `start` (only the first and last pieces of a range).
    fn decrypt_pieces(&self, pieces: &mut [(u64, &mut [u8])], start: u64) -> Result<()> {
        let s = self.layout.segment_size as usize;
        let mut ct = vec![0u8; s + TAG_LEN];
        let mut partial: Option<Zeroizing<Vec<u8>>> = None;
        for (i, dst) in pieces.iter_mut() {
            let i = *i;
            let plen = self.layout.plaintext_len_of(i) as usize;
            let ct = &mut ct[..plen + TAG_LEN];
            let offset = self.header_len + self.layout.body_offset_of(i);
            self.file.read_exact_at(ct, offset).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    // The file shrank since it was opened.
                    Error::authentication_failed()
                } else {
                    Error::new(ErrorKind::Io, "reading the model file").with_source(e)
                }
            })?;
            let last = i + 1 == self.layout.segments;
            if dst.len() == plen {
                self.cipher.open_segment(i, last, ct, dst)?;
            } else {
                let buf = partial.get_or_insert_with(|| Zeroizing::new(vec![0u8; s]));
                self.cipher.open_segment(i, last, ct, &mut buf[..plen])?;
                let seg_start = i * s as u64;
                let from = (start.max(seg_start) - seg_start) as usize;
                dst.copy_from_slice(&buf[from..from + dst.len()]);
            }
            self.decrypted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Parse the safetensors header, decrypting only the segments that hold it.
    #[allow(clippy::type_complexity)]
    fn index(&self) -> Result<(Vec<(String, String, Vec<u64>, u64, u64)>, Option<String>)> {
        let total = self.layout.plaintext_len;
        // The first segment holds the length and, for nearly every model, the whole header.
        let mut prefix = vec![0u8; total.min(self.layout.segment_size) as usize];
        self.read_into(0, &mut prefix)?;
        let n = prefix
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| Error::invalid("not a safetensors file: shorter than 8 bytes"))?;
        let want = n.saturating_add(8);
        if n <= hanzo_kms_weights::safetensors::MAX_HEADER && want <= total {
            let have = prefix.len() as u64;
            if want > have {
                prefix.resize(want as usize, 0);
                self.read_into(have, &mut prefix[have as usize..])?;
            }
            prefix.truncate(want as usize);
        }
        // read_index checks the length against the whole plaintext, and every tensor's offsets.
        let mut reader = Prefix {
            bytes: prefix,
            total,
            pos: 0,
        };
        let (tensors, metadata) = hanzo_kms_weights::safetensors::read_index(&mut reader)?;
        let metadata = metadata.map(|m| m.to_string());
        Ok((
            tensors
                .into_iter()
                .map(|t| (t.name, t.dtype, t.shape, t.start, t.end))
                .collect(),
            metadata,
        ))
    }
}

/// The decrypted start of a plaintext, presented as the whole of it (reads past the prefix
/// fail): what `read_index` needs to check offsets against the real length.
struct Prefix {
    bytes: Vec<u8>,
    total: u64,
    pos: u64,
}

impl std::io::Read for Prefix {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = usize::try_from(self.pos).unwrap_or(usize::MAX);
        let avail = self.bytes.get(start..).unwrap_or_default();
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Prefix {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.total.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or(std::io::ErrorKind::InvalidInput)?;
        Ok(self.pos)
    }
}

/// A new model file being written: plaintext in, segments sealed in parallel, out to a
/// temporary file beside the destination that becomes the destination only on `finish`.
#[pyclass(module = "hanzo_kms._native")]
pub struct SealingWriter {
    state: Mutex<Option<Sealing>>,
}

struct Sealing {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    cipher: FileCipher,
    segment: usize,
    threads: usize,
    /// Plaintext not yet sealed (less than one batch, or a batch with nothing after it yet).
    pending: Zeroizing<Vec<u8>>,
    /// Index of the next segment to seal.
    next: u64,
    /// Bytes written to the temporary file so far.
    written: u64,
    plaintext: u64,
}

#[pymethods]
impl SealingWriter {
    /// Start writing `path` from the server's `datakey` answer (a `bytearray` holding its JSON
    /// body with the new header and data key; zeroed here once read). Nothing appears at `path`
    /// until `finish`.
    #[new]
    #[pyo3(signature = (path, answer, threads=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        answer: &Bound<'_, PyAny>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let (header_bytes, dek) = take_model_key(py, answer)?;
        let threads = threads_or_default(threads);
        let state = py
            .detach(|| Sealing::start(&path, &header_bytes, &dek, threads))
            .map_err(|e| to_py(py, e))?;
        Ok(Self {
            state: Mutex::new(Some(state)),
        })
    }

    /// Append plaintext from any buffer (bytes, bytearray, memoryview, a contiguous NumPy
    /// array's `data`). Full batches of segments are sealed and written at once.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = PyBuffer::<u8>::get(data)?;
        let mut guard = self.lock(py)?;
        let st = guard
            .as_mut()
            .ok_or_else(|| to_py(py, Error::invalid("the writer is already finished")))?;
        let len = buf.len_bytes();
        let at = st.pending.len();
        st.pending.resize(at + len, 0);
        buf.copy_to_slice(py, &mut st.pending[at..])?;
        st.plaintext += len as u64;
        py.detach(|| st.flush_full()).map_err(|e| to_py(py, e))
    }

    /// Seal what remains (the final segment), sync the file and rename it into place. Returns
    /// the plaintext length.
    fn finish(&self, py: Python<'_>) -> PyResult<u64> {
        let st = self
            .lock(py)?
            .take()
            .ok_or_else(|| to_py(py, Error::invalid("the writer is already finished")))?;
        py.detach(|| st.finish()).map_err(|e| to_py(py, e))
    }

    /// Give up: remove the temporary file. Nothing is left at the destination.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        drop(self.lock(py)?.take());
        Ok(())
    }
}

impl SealingWriter {
    /// The writer's state. Never waits: the lock is held while the GIL is released, so a
    /// second Python thread waiting here with the GIL would deadlock the first.
    fn lock(&self, py: Python<'_>) -> PyResult<std::sync::MutexGuard<'_, Option<Sealing>>> {
        self.state.try_lock().map_err(|e| match e {
            std::sync::TryLockError::WouldBlock => {
                to_py(py, Error::invalid("the writer is in use by another thread"))
            }
            std::sync::TryLockError::Poisoned(_) => {
                to_py(py, Error::internal("an earlier write failed midway"))
            }
        })
    }
}

/// Segments sealed per batch, per thread.
const SEGMENTS_PER_THREAD: usize = 4;

impl Sealing {
    fn start(dest: &Path, header_bytes: &[u8], dek: &SecretKey32, threads: usize) -> Result<Self> {
        let (header, n) = Header::parse(header_bytes)?;
        if n != header_bytes.len() {
            return Err(Error::internal("the server's header has trailing bytes"));
        }
        let cipher = FileCipher::open(&header, dek, None)?;
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{}: not a file path", dest.display())))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.hkms-tmp", std::process::id()));
        let tmp = dest.with_file_name(tmp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, e))?;
        let mut st = Self {
            tmp,
            dest: dest.to_path_buf(),
            file,
            cipher,
            segment: header.segment_size as usize,
            threads,
            pending: Zeroizing::new(Vec::new()),
            next: 0,
            written: 0,
            plaintext: 0,
        };
        st.write_out(header_bytes)?;
        Ok(st)
    }

    /// Seal and write whole batches while more than a batch is pending (the segment after
    /// them exists, so none of them is the last).
    fn flush_full(&mut self) -> Result<()> {
        let batch = self.segment * self.threads * SEGMENTS_PER_THREAD;
        let mut done = 0;
        while self.pending.len() - done > batch {
            let sealed = self.seal(done, done + batch, false)?;
            self.write_out(&sealed)?;
            done += batch;
        }
        if done > 0 {
            self.pending.drain(..done);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        let len = self.pending.len();
        let sealed = self.seal(0, len, true)?;
        self.write_out(&sealed)?;
        self.pending.clear();
        self.file.sync_all().map_err(|e| io_error(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| io_error(&self.dest, e))?;
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Makes the rename durable; a directory that cannot be opened to sync is no error.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // Renamed: nothing to remove on drop.
        self.tmp = PathBuf::new();
        Ok(self.plaintext)
    }

    /// Seal pending plaintext `[from, to)` (whole segments unless `last`) in parallel.
    fn seal(&mut self, from: usize, to: usize, last: bool) -> Result<Vec<u8>> {
        let s = self.segment;
        let plain = &self.pending[from..to];
        let segs = if plain.is_empty() {
            1
        } else {
            plain.len().div_ceil(s)
        };
        let mut out = vec![0u8; plain.len() + segs * TAG_LEN];
        let first = self.next;
        let mut jobs: Vec<(u64, bool, &[u8], &mut [u8])> = if plain.is_empty() {
            vec![(first, true, plain, &mut out[..])]
        } else {
            plain
                .chunks(s)
                .zip(out.chunks_mut(s + TAG_LEN))
                .enumerate()
                .map(|(k, (p, c))| (first + k as u64, last && k + 1 == segs, p, c))
                .collect()
        };
        let cipher = &self.cipher;
        let work = |run: &mut [(u64, bool, &[u8], &mut [u8])]| -> Result<()> {
            for (i, is_last, p, c) in run.iter_mut() {
                cipher.seal_segment(*i, *is_last, p, c)?;
            }
            Ok(())
        };
        let threads = self.threads.min(jobs.len()).max(1);
        if threads == 1 {
            work(&mut jobs)?;
        } else {
            let per = jobs.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .chunks_mut(per)
                    .map(|r| scope.spawn(|| work(r)))
                    .collect();
                let mut result = Ok(());
                for h in handles {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(Error::internal("a worker thread panicked")));
                    if result.is_ok() {
                        result = r;
                    }
                }
                result
            })?;
        }
        drop(jobs);
        self.next += segs as u64;
        Ok(out)
    }

    fn write_out(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, self.written)
            .map_err(|e| io_error(&self.tmp, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for Sealing {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

// ---- helpers ---------------------------------------------------------------------------------

fn open_encrypted(path: &Path) -> Result<EncryptedFile> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let (header, _, _) = hanzo_kms_weights::read_header(&mut file)?;
    let header_bytes = header.encode()?;
    Ok(EncryptedFile {
        path: path.to_path_buf(),
        file,
        header,
        header_bytes,
    })
}

fn threads_or_default(threads: Option<usize>) -> usize {
    threads
        .unwrap_or_else(hanzo_kms_weights::default_threads)
        .clamp(1, 256)
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{}: {e}", path.display())).with_source(e)
}

/// Our error as the matching `hanzo_kms.errors` exception (by its code).
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let code = e.kind().code();
    let message = e.message().to_owned();
    let made = py
        .import("hanzo_kms.errors")
        .and_then(|m| m.getattr("from_code"))
        .and_then(|f| f.call1((code, message.clone())));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(format!("{code}: {message}")),
    }
}

/// The answer of `datakey` or `unwrap`: `{"key", "version", "header", "data_key"}` (base64).
#[derive(Deserialize)]
struct ModelKeyAnswer<'a> {
    #[serde(borrow)]
    header: &'a str,
    #[serde(borrow)]
    data_key: &'a str,
}

/// Copy an answer out of its Python buffer into wiped memory, and zero the buffer.
fn take_answer(py: Python<'_>, answer: &Bound<'_, PyAny>) -> PyResult<Zeroizing<Vec<u8>>> {
    let buf = PyBuffer::<u8>::get(answer)?;
    let mut bytes = Zeroizing::new(vec![0u8; buf.len_bytes()]);
    buf.copy_to_slice(py, &mut bytes)?;
    if !buf.readonly() {
        buf.copy_from_slice(py, &vec![0u8; bytes.len()])?;
    }
    Ok(bytes)
}

fn parse_answer(bytes: &[u8]) -> Result<(Vec<u8>, SecretKey32)> {
    let a: ModelKeyAnswer<'_> = serde_json::from_slice(bytes)
        .map_err(|_| Error::internal("the server's model-key answer is not what was expected"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let header = b64
        .decode(a.header)
        .map_err(|_| Error::internal("the server's header is not base64"))?;
    let key = Zeroizing::new(
        b64.decode(a.data_key)
            .map_err(|_| Error::internal("the server's data key is not base64"))?,
    );
    let dek = SecretKey32::from_slice(&key)
        .map_err(|_| Error::internal("the server's data key is not 32 bytes"))?;
    Ok((header, dek))
}

fn take_model_key(py: Python<'_>, answer: &Bound<'_, PyAny>) -> PyResult<(Vec<u8>, SecretKey32)> {
    let bytes = take_answer(py, answer)?;
    parse_answer(&bytes).map_err(|e| to_py(py, e))
}

fn take_data_key(py: Python<'_>, answer: &Bound<'_, PyAny>) -> PyResult<SecretKey32> {
    take_model_key(py, answer).map(|(_, dek)| dek)
}
