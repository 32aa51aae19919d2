//! Model weights: encrypted and decrypted in the caller's process. Only a file's header goes to
//! the server, which generates or unwraps the file's data key under the model's key; the
//! weights never cross the network.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hanzo_kms_core::weights::Header;
use hanzo_kms_core::{Error, ErrorKind, Result, SecretKey32};
use hanzo_kms_proto::v1 as pb;
use hanzo_kms_weights::FileCipher;
use zeroize::Zeroizing;

use crate::Client;
use crate::call::{GenerateModelKey, UnwrapModelKey};
use crate::transport::{Answer, b64_field, key32, take_key32};

impl Client {
    /// EncryptModelWeights for weights in memory: returns the whole model file (header and
    /// segments). `model` is `customer:model` or a full `model:customer:model` key name.
    /// `metadata` is bound into the header and authenticated.
    pub async fn encrypt_model_weights(
        &self,
        model: &str,
        weights: &[u8],
        metadata: &[u8],
    ) -> Result<Vec<u8>> {
        let (header, cipher) = self.seal(model, metadata).await?;
        hanzo_kms_weights::encrypt_to_vec(&header, &cipher, weights, self.threads)
    }

    /// DecryptModelWeights for a model file in memory.
    pub async fn decrypt_model_weights(
        &self,
        model: &str,
        file: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (header, n) = Header::parse(file)?;
        let cipher = self.open(model, &header, &file[..n]).await?;
        let body = &file[n..];
        let layout = header.layout(body.len() as u64)?;
        let len = usize::try_from(layout.plaintext_len)
            .map_err(|_| Error::invalid("the model file is too large for memory"))?;
        let mut out = Zeroizing::new(vec![0u8; len]);
        cipher.open_body(body, &mut out, self.threads)?;
        Ok(out)
    }

    /// EncryptModelWeights from a reader to a writer, at memory speed on the client's cores
    /// (on a blocking thread). Returns the plaintext length and the writer.
    pub async fn encrypt_model_weights_stream<R, W>(
        &self,
        model: &str,
        input: R,
        output: W,
        metadata: &[u8],
    ) -> Result<(u64, W)>
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let (header, cipher) = self.seal(model, metadata).await?;
        let head = header.encode()?;
        let threads = self.threads;
        blocking(move || {
            let mut output = output;
            let n = hanzo_kms_weights::encrypt_stream(
                &cipher,
                &head,
                input,
                &mut output,
                threads,
                &|_| {},
            )?;
            Ok((n, output))
        })
        .await
    }

    /// DecryptModelWeights from a reader to a writer. On an error the writer may hold a prefix
    /// of the plaintext; discard it (the file form does).
    pub async fn decrypt_model_weights_stream<R, W>(
        &self,
        model: &str,
        input: R,
        output: W,
    ) -> Result<(u64, W)>
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let (mut input, header, head_bytes, rest) = blocking(move || {
            let mut input = input;
            let (header, _, rest) = hanzo_kms_weights::read_header(&mut input)?;
            let head = header.encode()?;
            Ok((input, header, head, rest))
        })
        .await?;
        let cipher = self.open(model, &header, &head_bytes).await?;
        let threads = self.threads;
        blocking(move || {
            let mut output = output;
            let chained = std::io::Cursor::new(rest).chain(&mut input);
            let n =
                hanzo_kms_weights::decrypt_stream(&cipher, chained, &mut output, threads, &|_| {})?;
            Ok((n, output))
        })
        .await
    }

    /// EncryptModelWeights file to file. The output appears whole or not at all (written to a
    /// temporary file beside it, then renamed).
    pub async fn encrypt_model_weights_file(
        &self,
        model: &str,
        input: impl AsRef<Path>,
        output: impl AsRef<Path>,
        metadata: &[u8],
    ) -> Result<u64> {
        let src = open_file(input.as_ref())?;
        let out = output.as_ref().to_path_buf();
        let tmp = TempOut::create(&out)?;
        let writer = std::io::BufWriter::with_capacity(1 << 20, tmp.file()?);
        let (n, w) = self
            .encrypt_model_weights_stream(model, src, writer, metadata)
            .await?;
        finish(w, &out)?;
        tmp.commit()?;
        Ok(n)
    }

    /// DecryptModelWeights file to file; nothing is left behind on any error.
    pub async fn decrypt_model_weights_file(
        &self,
        model: &str,
        input: impl AsRef<Path>,
        output: impl AsRef<Path>,
    ) -> Result<u64> {
        let src = open_file(input.as_ref())?;
        let out = output.as_ref().to_path_buf();
        let tmp = TempOut::create(&out)?;
        let writer = std::io::BufWriter::with_capacity(1 << 20, tmp.file()?);
        let (n, w) = self
            .decrypt_model_weights_stream(model, src, writer)
            .await?;
        finish(w, &out)?;
        tmp.commit()?;
        Ok(n)
    }

    // ---- model-key plumbing -----------------------------------------------------------------

    /// A new header and cipher for a model file, for callers with their own I/O pipeline: the
    /// data key comes from the server, wrapped there under the model's key; the cipher checks
    /// it against the header's commitment. Write `header.encode()` and then the segments.
    pub async fn model_seal(
        &self,
        model: &str,
        metadata: &[u8],
        segment_size: Option<u32>,
    ) -> Result<(Header, FileCipher)> {
        self.seal_with(model, metadata, segment_size.unwrap_or(0))
            .await
    }

    /// The cipher of an existing model file from its parsed header (only the header goes to
    /// the server).
    pub async fn model_open(&self, model: &str, header: &Header) -> Result<FileCipher> {
        let bytes = header.encode()?;
        self.open(model, header, &bytes).await
    }

    async fn seal(&self, model: &str, metadata: &[u8]) -> Result<(Header, FileCipher)> {
        self.seal_with(model, metadata, 0).await
    }

    async fn seal_with(
        &self,
        model: &str,
        metadata: &[u8],
        segment_size: u32,
    ) -> Result<(Header, FileCipher)> {
        let key = model_key_name(model);
        let a = self
            .call(&GenerateModelKey {
                key: &key,
                metadata,
                segment_size,
            })
            .await?;
        let (header_bytes, dek) = model_key_of(a)?;
        let (header, _) = Header::parse(&header_bytes)?;
        let cipher = FileCipher::open(&header, &dek, None)?;
        Ok((header, cipher))
    }

    /// The cipher of an existing model file: only its header goes to the server.
    async fn open(&self, model: &str, header: &Header, header_bytes: &[u8]) -> Result<FileCipher> {
        let key = model_key_name(model);
        let a = self
            .call(&UnwrapModelKey {
                key: &key,
                header: header_bytes,
            })
            .await?;
        let (_, dek) = model_key_of(a)?;
        FileCipher::open(header, &dek, None)
    }
}

/// `acme:gpt4` → `model:acme:gpt4`; a full key name is kept.
pub(crate) fn model_key_name(model: &str) -> String {
    if model.starts_with("model:") || model.matches(':').count() >= 2 {
        model.to_owned()
    } else {
        format!("model:{model}")
    }
}

/// A model-file header and its data key, from either transport. The gRPC message's copy of
/// the key is wiped once read.
fn model_key_of(a: Answer<pb::ModelKey>) -> Result<(Vec<u8>, SecretKey32)> {
    match a {
        Answer::Grpc(mut m) => {
            let dek = take_key32(&mut m.data_key)?;
            Ok((std::mem::take(&mut m.header), dek))
        }
        Answer::Rest(v) => Ok((
            b64_field(&v, "header")?.to_vec(),
            key32(&b64_field(&v, "data_key")?)?,
        )),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("the worker thread failed: {e}")))?
}

fn open_file(p: &Path) -> Result<std::fs::File> {
    std::fs::File::open(p)
        .map_err(|e| Error::new(ErrorKind::Io, format!("opening {}", p.display())).with_source(e))
}

pub(crate) fn finish<W: Write>(mut w: std::io::BufWriter<W>, out: &Path) -> Result<()> {
    w.flush()
        .map_err(|e| Error::new(ErrorKind::Io, format!("writing {}", out.display())).with_source(e))
}

/// An output file written beside its destination and renamed into place on success; removed
/// when dropped uncommitted.
struct TempOut {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempOut {
    fn create(dest: &Path) -> Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{}: not a file path", dest.display())))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = dest.with_file_name(tmp_name);
        std::fs::File::create(&tmp).map_err(|e| {
            Error::new(ErrorKind::Io, format!("creating {}", tmp.display())).with_source(e)
        })?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    fn file(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(|e| {
                Error::new(ErrorKind::Io, format!("opening {}", self.tmp.display())).with_source(e)
            })
    }

    fn commit(mut self) -> Result<()> {
        let f = self.file_for_sync()?;
        f.sync_all().map_err(|e| {
            Error::new(ErrorKind::Io, format!("syncing {}", self.tmp.display())).with_source(e)
        })?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("renaming to {}", self.dest.display()),
            )
            .with_source(e)
        })?;
        self.done = true;
        Ok(())
    }

    fn file_for_sync(&self) -> Result<std::fs::File> {
        std::fs::File::open(&self.tmp).map_err(|e| {
            Error::new(ErrorKind::Io, format!("opening {}", self.tmp.display())).with_source(e)
        })
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
