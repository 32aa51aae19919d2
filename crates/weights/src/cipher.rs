//! Key derivation, commitment and the parallel segment engine.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use hanzo_kms_core::weights::{
    COMMITMENT_LEN, DEFAULT_SEGMENT, Header, Layout, NONCE_PREFIX_LEN, SALT_LEN, TAG_LEN,
    check_segment_size, segment_nonce,
};
use hanzo_kms_core::{Error, Result, SecretKey32};
use zeroize::Zeroizing;

const SEGMENT_KEY_INFO: &[u8] = b"hanzo-kms/weights/v1/segment-key";
const COMMITMENT_INFO: &[u8] = b"hanzo-kms/weights/v1/commitment";
const DEK_AAD_PREFIX: &[u8] = b"hanzo-kms/weights/v1/dek\0";

struct Len32;
impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// `SHA-256(file_part)`.
pub fn file_part_hash(header: &Header) -> [u8; 32] {
    let d = digest(&SHA256, &header.file_part());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The AAD under which the provider wraps this file's DEK.
pub fn dek_aad(header: &Header) -> Vec<u8> {
    dek_aad_for(
        &header.key_name,
        header.key_version,
        &file_part_hash(header),
    )
}

fn dek_aad_for(key_name: &str, version: u32, h: &[u8; 32]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_AAD_PREFIX.len() + key_name.len() + 37);
    aad.extend_from_slice(DEK_AAD_PREFIX);
    aad.extend_from_slice(key_name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(h);
    aad
}

/// (segment key, commitment) for a DEK and header.
fn derive(
    dek: &SecretKey32,
    header: &Header,
) -> Result<(Zeroizing<[u8; 32]>, [u8; COMMITMENT_LEN])> {
    let h = file_part_hash(header);
    let prk = Salt::new(HKDF_SHA256, &header.salt).extract(dek.expose());
    let mut key = Zeroizing::new([0u8; 32]);
    let mut commitment = [0u8; COMMITMENT_LEN];
    prk.expand(&[SEGMENT_KEY_INFO, &h], Len32)
        .and_then(|okm| okm.fill(key.as_mut()))
        .map_err(|_| Error::internal("HKDF failed"))?;
    prk.expand(&[COMMITMENT_INFO, &h], Len32)
        .and_then(|okm| okm.fill(&mut commitment))
        .map_err(|_| Error::internal("HKDF failed"))?;
    Ok((key, commitment))
}

/// A header being made: the file part is fixed; the key slot comes from the provider.
#[derive(Debug)]
pub struct Draft {
    header: Header,
}

impl Draft {
    /// A new file part with a fresh random salt and nonce prefix.
    pub fn new(model_id: &str, metadata: &[u8], segment_size: Option<u32>) -> Result<Self> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| Error::internal("random generator failed"))?;
        aws_lc_rs::rand::fill(&mut nonce_prefix)
            .map_err(|_| Error::internal("random generator failed"))?;
        Self::with_randomness(model_id, metadata, segment_size, salt, nonce_prefix)
    }

    /// A new file part with given salt and nonce prefix (test vectors only: reusing them with
    /// the same DEK would reuse nonces).
    pub fn with_randomness(
        model_id: &str,
        metadata: &[u8],
        segment_size: Option<u32>,
        salt: [u8; SALT_LEN],
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<Self> {
        let segment_size = segment_size.unwrap_or(DEFAULT_SEGMENT);
        check_segment_size(segment_size)?;
        let header = Header {
            segment_size,
            salt,
            nonce_prefix,
            model_id: model_id.to_owned(),
            metadata: metadata.to_vec(),
            commitment: [0; COMMITMENT_LEN],
            key_name: String::new(),
            key_version: 0,
            wrapped_dek: Vec::new(),
        };
        header.check_file_part()?;
        Ok(Self { header })
    }

    /// The AAD to wrap the DEK with, for `key_name` at `version`.
    pub fn dek_aad(&self, key_name: &str, version: u32) -> Vec<u8> {
        dek_aad_for(key_name, version, &file_part_hash(&self.header))
    }

    /// Complete the header with the key slot, and compute the commitment from the DEK.
    pub fn finish(
        mut self,
        key_name: &str,
        version: u32,
        wrapped_dek: Vec<u8>,
        dek: &SecretKey32,
    ) -> Result<(Header, FileCipher)> {
        self.header.key_name = key_name.to_owned();
        self.header.key_version = version;
        self.header.wrapped_dek = wrapped_dek;
        let (key, commitment) = derive(dek, &self.header)?;
        self.header.commitment = commitment;
        self.header.check()?;
        let cipher = FileCipher::from_key(&key, &self.header)?;
        Ok((self.header, cipher))
    }
}

/// The segment cipher of one file.
pub struct FileCipher {
    key: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    segment_size: u32,
}

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCipher")
            .field("segment_size", &self.segment_size)
            .finish_non_exhaustive()
    }
}

/// One unit of parallel work: segment index, whether it is last, input and output.
type Job<'a> = (u64, bool, &'a [u8], &'a mut [u8]);

impl FileCipher {
    /// The cipher for an existing file. Checks the commitment: a DEK that does not match the
    /// header (or a header edited since) is "authentication failed". With `expected_model`,
    /// also refuses a file made for another model, with the same opaque error.
    pub fn open(header: &Header, dek: &SecretKey32, expected_model: Option<&str>) -> Result<Self> {
        if expected_model.is_some_and(|m| m != header.model_id) {
            return Err(Error::authentication_failed());
        }
        let (key, commitment) = derive(dek, header)?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(&commitment, &header.commitment)
            .is_err()
        {
            return Err(Error::authentication_failed());
        }
        Self::from_key(&key, header)
    }

    fn from_key(key: &[u8; 32], header: &Header) -> Result<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| Error::internal("AES key setup failed"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            nonce_prefix: header.nonce_prefix,
            segment_size: header.segment_size,
        })
    }

    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }

    /// Seal one segment: `out` must be `plaintext.len() + 16` bytes.
    pub fn seal_segment(&self, i: u64, last: bool, plaintext: &[u8], out: &mut [u8]) -> Result<()> {
        let nonce = Nonce::assume_unique_for_key(segment_nonce(&self.nonce_prefix, i, last)?);
        let (ct, tag) = out.split_at_mut(plaintext.len());
        self.key
            .seal_out_of_place_scatter(nonce, Aad::empty(), plaintext, ct, &[], tag)
            .map_err(|_| Error::internal("AES-GCM seal failed"))
    }

    /// Open one segment: `out` must be `ciphertext.len() - 16` bytes. On failure `out` is zeroed.
    pub fn open_segment(
        &self,
        i: u64,
        last: bool,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        if ciphertext.len() < TAG_LEN || out.len() != ciphertext.len() - TAG_LEN {
            return Err(Error::authentication_failed());
        }
        let nonce = Nonce::assume_unique_for_key(segment_nonce(&self.nonce_prefix, i, last)?);
        let (ct, tag) = ciphertext.split_at(out.len());
        self.key
            .open_separate_gather(nonce, Aad::empty(), ct, tag, out)
            .map_err(|_| {
                out.fill(0);
                Error::authentication_failed()
            })
    }

    /// Encrypt a whole plaintext into `body` (exactly `Layout::for_plaintext(..).body_len()`
    /// bytes), with `threads` workers.
    pub fn seal_body(&self, plaintext: &[u8], body: &mut [u8], threads: usize) -> Result<()> {
        let layout = Layout::for_plaintext(self.segment_size, plaintext.len() as u64);
        if body.len() as u64 != layout.body_len() {
            return Err(Error::internal("output buffer has the wrong size"));
        }
        let s = self.segment_size as usize;
        let n = layout.segments;
        let jobs: Vec<Job<'_>> = if plaintext.is_empty() {
            vec![(0, true, &plaintext[..0], body)]
        } else {
            plaintext
                .chunks(s)
                .zip(body.chunks_mut(s + TAG_LEN))
                .enumerate()
                .map(|(i, (p, c))| (i as u64, i as u64 + 1 == n, p, c))
                .collect()
        };
        self.run(jobs, threads, true)
    }

    /// Decrypt a whole body (all segments) into `plaintext` (exactly the layout's plaintext
    /// length). On failure `plaintext` holds no plaintext.
    pub fn open_body(&self, body: &[u8], plaintext: &mut [u8], threads: usize) -> Result<()> {
        let layout = Layout::from_body(self.segment_size, body.len() as u64)?;
        if plaintext.len() as u64 != layout.plaintext_len {
            return Err(Error::internal("output buffer has the wrong size"));
        }
        let s = self.segment_size as usize;
        let n = layout.segments;
        let jobs: Vec<Job<'_>> = body
            .chunks(s + TAG_LEN)
            .zip(plaintext.chunks_mut(s).chain(std::iter::once(&mut [][..])))
            .enumerate()
            .take(n as usize)
            .map(|(i, (c, p))| (i as u64, i as u64 + 1 == n, c, p))
            .collect();
        let r = self.run(jobs, threads, false);
        if r.is_err() {
            plaintext.fill(0);
        }
        r
    }

    /// Run jobs on `threads` workers, contiguous runs each. Stops at the first failure.
    pub(crate) fn run(&self, mut jobs: Vec<Job<'_>>, threads: usize, seal: bool) -> Result<()> {
        let work = |batch: &mut [Job<'_>]| -> Result<()> {
            for (i, last, input, output) in batch.iter_mut() {
                if seal {
                    self.seal_segment(*i, *last, input, output)?;
                } else {
                    self.open_segment(*i, *last, input, output)?;
                }
            }
            Ok(())
        };
        let threads = threads.max(1).min(jobs.len().max(1));
        if threads == 1 {
            return work(&mut jobs);
        }
        let per = jobs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .chunks_mut(per)
                .map(|batch| scope.spawn(|| work(batch)))
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
    }
}

/// Encrypt a whole plaintext to file bytes (header ‖ body) under `header`'s cipher.
pub fn encrypt_to_vec(
    header: &Header,
    cipher: &FileCipher,
    plaintext: &[u8],
    threads: usize,
) -> Result<Vec<u8>> {
    let head = header.encode()?;
    let layout = Layout::for_plaintext(header.segment_size, plaintext.len() as u64);
    let mut out = vec![0u8; head.len() + layout.body_len() as usize];
    out[..head.len()].copy_from_slice(&head);
    cipher.seal_body(plaintext, &mut out[head.len()..], threads)?;
    Ok(out)
}
