//! The model-weight file format: header codec and segment layout (no cryptography here; see the
//! `hanzo-kms-weights` crate for that, and docs/format.md for the specification).
//!
//! ```text
//! file      = header ‖ segment_0 ‖ … ‖ segment_{n-1}
//! header    = file_part ‖ commitment(32) ‖ key_slot
//! file_part = magic "HZKMSW" ‖ version u8 = 1 ‖ algorithm u8 = 1 ‖ segment_size u32be
//!           ‖ salt(32) ‖ nonce_prefix(7) ‖ u16be(len) ‖ model_id ‖ u32be(len) ‖ metadata
//! key_slot  = u16be(len) ‖ key_name ‖ key_version u32be ‖ u16be(len) ‖ wrapped_dek
//! segment_i = AES-256-GCM(segment_key, nonce_prefix ‖ u32be(i) ‖ last_flag, plaintext_i) ‖ tag(16)
//! ```
//!
//! Every segment but the last holds exactly `segment_size` plaintext bytes; the last holds
//! 1..=segment_size bytes, or 0 bytes only when it is the only segment (an empty file).
//! The number of segments follows from the file length, so there is no length field to forge.

use crate::error::{Error, ErrorKind, Result};

/// The first six bytes of every model file.
pub const MAGIC: &[u8; 6] = b"HZKMSW";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// AES-256-GCM segments, HKDF-SHA256 segment key, HKDF commitment.
pub const ALGORITHM_AES256GCM_HKDF: u8 = 1;
/// Bytes of salt.
pub const SALT_LEN: usize = 32;
/// Bytes of the per-file nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Bytes of the key commitment.
pub const COMMITMENT_LEN: usize = 32;
/// Bytes of a GCM tag, appended to every segment.
pub const TAG_LEN: usize = 16;
/// Smallest and largest segment size (plaintext bytes), both powers of two.
pub const MIN_SEGMENT: u32 = 1 << 12;
pub const MAX_SEGMENT: u32 = 1 << 26;
/// The default segment size: 1 MiB (see docs/format.md for why).
pub const DEFAULT_SEGMENT: u32 = 1 << 20;
/// Field limits.
pub const MAX_MODEL_ID: usize = 512;
pub const MAX_METADATA: usize = 64 << 10;
pub const MAX_KEY_NAME: usize = 512;
pub const MAX_WRAPPED_DEK: usize = 1024;
/// Length of the fixed part before the model id.
const FIXED_LEN: usize = 6 + 1 + 1 + 4 + SALT_LEN + NONCE_PREFIX_LEN;

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub segment_size: u32,
    pub salt: [u8; SALT_LEN],
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub model_id: String,
    pub metadata: Vec<u8>,
    pub commitment: [u8; COMMITMENT_LEN],
    pub key_name: String,
    pub key_version: u32,
    pub wrapped_dek: Vec<u8>,
}

/// The error for a file that does not start with our magic.
pub fn not_a_model_file() -> Error {
    Error::new(ErrorKind::InvalidArgument, "not a Hanzo KMS model file")
}

impl Header {
    /// The bytes of the file part (everything the segment key and the commitment bind).
    pub fn file_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 6 + self.model_id.len() + self.metadata.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(ALGORITHM_AES256GCM_HKDF);
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&(self.model_id.len() as u16).to_be_bytes());
        out.extend_from_slice(self.model_id.as_bytes());
        out.extend_from_slice(&(self.metadata.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.metadata);
        out
    }

    /// The key slot bytes.
    pub fn key_slot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.key_name.len() + self.wrapped_dek.len());
        out.extend_from_slice(&(self.key_name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.key_name.as_bytes());
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&(self.wrapped_dek.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped_dek);
        out
    }

    /// The whole header.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check()?;
        let mut out = self.file_part();
        out.extend_from_slice(&self.commitment);
        out.extend_from_slice(&self.key_slot());
        Ok(out)
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        FIXED_LEN
            + 2
            + self.model_id.len()
            + 4
            + self.metadata.len()
            + COMMITMENT_LEN
            + 2
            + self.key_name.len()
            + 4
            + 2
            + self.wrapped_dek.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Field limits of the file part (checked before any key is used).
    pub fn check_file_part(&self) -> Result<()> {
        check_segment_size(self.segment_size)?;
        if self.model_id.is_empty() || self.model_id.len() > MAX_MODEL_ID {
            return Err(Error::invalid(format!(
                "the model id is {} bytes; the format allows 1 to {MAX_MODEL_ID}",
                self.model_id.len()
            )));
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(Error::invalid(format!(
                "the metadata is {} bytes; the format allows 0 to {MAX_METADATA}",
                self.metadata.len()
            )));
        }
        Ok(())
    }

    /// Field limits, for encoding.
    pub fn check(&self) -> Result<()> {
        self.check_file_part()?;
        let bad = |what: &str, max: usize, got: usize| {
            Err(Error::invalid(format!(
                "{what} is {got} bytes; the format allows 1 to {max}"
            )))
        };
        if self.key_name.is_empty() || self.key_name.len() > MAX_KEY_NAME {
            return bad("the key name", MAX_KEY_NAME, self.key_name.len());
        }
        if self.key_version == 0 {
            return Err(Error::invalid("the key version must be at least 1"));
        }
        if self.wrapped_dek.is_empty() || self.wrapped_dek.len() > MAX_WRAPPED_DEK {
            return bad(
                "the wrapped data key",
                MAX_WRAPPED_DEK,
                self.wrapped_dek.len(),
            );
        }
        Ok(())
    }

    /// Parse a header from the start of `bytes`; returns it and its length. `bytes` may hold
    /// more (segments) or, when reading incrementally, too little: then the error kind is
    /// [`ErrorKind::InvalidArgument`] with [`Parse::NeedMore`] semantics via [`Header::parse_prefix`].
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize)> {
        match Self::parse_prefix(bytes)? {
            Parse::Done(h, n) => Ok((h, n)),
            Parse::NeedMore(_) => Err(Error::authentication_failed()),
        }
    }

    /// Parse as much as `bytes` allows. A wrong magic is "not a Hanzo KMS model file"; an
    /// unknown version names itself; every other malformation is "authentication failed",
    /// because a header is only trusted once its key slot unwraps and its commitment matches.
    pub fn parse_prefix(bytes: &[u8]) -> Result<Parse> {
        let mut r = Cursor { bytes, pos: 0 };
        let Some(magic) = r.take(6) else {
            return if MAGIC.starts_with(bytes) {
                Ok(Parse::NeedMore(6))
            } else {
                Err(not_a_model_file())
            };
        };
        if magic != MAGIC {
            return Err(not_a_model_file());
        }
        let Some(version) = r.u8() else {
            return Ok(Parse::NeedMore(r.pos + 1));
        };
        if version != VERSION {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "not a Hanzo KMS model file this build can read (format version {version}; this build reads {VERSION})"
                ),
            ));
        }
        let auth = Error::authentication_failed;
        macro_rules! need {
            ($e:expr, $n:expr) => {
                match $e {
                    Some(v) => v,
                    None => return Ok(Parse::NeedMore(r.pos + $n)),
                }
            };
        }
        let algorithm = need!(r.u8(), 1);
        if algorithm != ALGORITHM_AES256GCM_HKDF {
            return Err(auth());
        }
        let segment_size = need!(r.u32(), 4);
        if check_segment_size(segment_size).is_err() {
            return Err(auth());
        }
        let salt: [u8; SALT_LEN] = need!(r.array(), SALT_LEN);
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] = need!(r.array(), NONCE_PREFIX_LEN);
        let model_len = need!(r.u16(), 2) as usize;
        if model_len == 0 || model_len > MAX_MODEL_ID {
            return Err(auth());
        }
        let model_id = need!(r.take(model_len), model_len);
        let model_id = std::str::from_utf8(model_id)
            .map_err(|_| auth())?
            .to_owned();
        let meta_len = need!(r.u32(), 4) as usize;
        if meta_len > MAX_METADATA {
            return Err(auth());
        }
        let metadata = need!(r.take(meta_len), meta_len).to_vec();
        let commitment: [u8; COMMITMENT_LEN] = need!(r.array(), COMMITMENT_LEN);
        let name_len = need!(r.u16(), 2) as usize;
        if name_len == 0 || name_len > MAX_KEY_NAME {
            return Err(auth());
        }
        let key_name = need!(r.take(name_len), name_len);
        let key_name = std::str::from_utf8(key_name)
            .map_err(|_| auth())?
            .to_owned();
        let key_version = need!(r.u32(), 4);
        if key_version == 0 {
            return Err(auth());
        }
        let wrapped_len = need!(r.u16(), 2) as usize;
        if wrapped_len == 0 || wrapped_len > MAX_WRAPPED_DEK {
            return Err(auth());
        }
        let wrapped_dek = need!(r.take(wrapped_len), wrapped_len).to_vec();
        Ok(Parse::Done(
            Header {
                segment_size,
                salt,
                nonce_prefix,
                model_id,
                metadata,
                commitment,
                key_name,
                key_version,
                wrapped_dek,
            },
            r.pos,
        ))
    }

    /// The layout of a file whose segments take `body_len` bytes after this header.
    pub fn layout(&self, body_len: u64) -> Result<Layout> {
        Layout::from_body(self.segment_size, body_len)
    }
}

/// The outcome of parsing a possibly incomplete header.
#[derive(Debug)]
pub enum Parse {
    Done(Header, usize),
    /// At least this many bytes are needed in total before parsing can go on.
    NeedMore(usize),
}

/// Check a segment size: a power of two from 4 KiB to 64 MiB.
pub fn check_segment_size(s: u32) -> Result<()> {
    if s.is_power_of_two() && (MIN_SEGMENT..=MAX_SEGMENT).contains(&s) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "segment size {s} is not a power of two from {MIN_SEGMENT} to {MAX_SEGMENT} bytes"
        )))
    }
}

/// Where the segments are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub segment_size: u64,
    pub segments: u64,
    pub plaintext_len: u64,
}

impl Layout {
    /// The layout for a plaintext of `len` bytes.
    pub fn for_plaintext(segment_size: u32, len: u64) -> Self {
        let s = u64::from(segment_size);
        let segments = if len == 0 { 1 } else { len.div_ceil(s) };
        Self {
            segment_size: s,
            segments,
            plaintext_len: len,
        }
    }

    /// The layout implied by a body (all segments) of `body_len` bytes. Lengths that no
    /// encryption produces (a truncated or extended file) are "authentication failed".
    pub fn from_body(segment_size: u32, body_len: u64) -> Result<Self> {
        let s = u64::from(segment_size);
        let full = s + TAG_LEN as u64;
        if body_len < TAG_LEN as u64 {
            return Err(Error::authentication_failed());
        }
        let segments = body_len.div_ceil(full);
        let last_ct = body_len - (segments - 1) * full;
        if last_ct < TAG_LEN as u64
            || (last_ct == TAG_LEN as u64 && segments > 1)
            || segments > u64::from(u32::MAX) + 1
        {
            return Err(Error::authentication_failed());
        }
        Ok(Self {
            segment_size: s,
            segments,
            plaintext_len: (segments - 1) * s + (last_ct - TAG_LEN as u64),
        })
    }

    /// Bytes of all segments.
    pub fn body_len(&self) -> u64 {
        self.plaintext_len + self.segments * TAG_LEN as u64
    }

    /// Plaintext bytes of segment `i`.
    pub fn plaintext_len_of(&self, i: u64) -> u64 {
        if i + 1 < self.segments {
            self.segment_size
        } else {
            self.plaintext_len - (self.segments - 1) * self.segment_size
        }
    }

    /// Offset of segment `i` within the body.
    pub fn body_offset_of(&self, i: u64) -> u64 {
        i * (self.segment_size + TAG_LEN as u64)
    }

    /// The segments that hold plaintext bytes `[start, end)`.
    pub fn segments_for(&self, start: u64, end: u64) -> std::ops::Range<u64> {
        if start >= end {
            return 0..0;
        }
        (start / self.segment_size)..end.div_ceil(self.segment_size).min(self.segments)
    }
}

/// The 12-byte nonce of segment `i`.
pub fn segment_nonce(prefix: &[u8; NONCE_PREFIX_LEN], i: u64, last: bool) -> Result<[u8; 12]> {
    let i =
        u32::try_from(i).map_err(|_| Error::invalid("a model file has at most 2^32 segments"))?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&i.to_be_bytes());
    n[11] = u8::from(last);
    Ok(n)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            segment_size: DEFAULT_SEGMENT,
            salt: [1; 32],
            nonce_prefix: [2; 7],
            model_id: "acme:gpt4".into(),
            metadata: b"{\"format\":\"safetensors\"}".to_vec(),
            commitment: [3; 32],
            key_name: "model:acme:gpt4".into(),
            key_version: 7,
            wrapped_dek: vec![4; 60],
        }
    }

    #[test]
    fn round_trip_and_prefix_parsing() {
        let h = header();
        let bytes = h.encode().unwrap();
        assert_eq!(bytes.len(), h.len());
        let (back, n) = Header::parse(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(n, bytes.len());
        for cut in 0..bytes.len() {
            match Header::parse_prefix(&bytes[..cut]).unwrap() {
                Parse::NeedMore(m) => assert!(m > cut && m <= bytes.len(), "cut {cut}: need {m}"),
                Parse::Done(..) => panic!("parsed a truncated header at {cut}"),
            }
        }
    }

    #[test]
    fn foreign_files_are_named_as_such() {
        assert_eq!(
            Header::parse_prefix(b"PK\x03\x04zipfile")
                .unwrap_err()
                .to_string(),
            "not a Hanzo KMS model file"
        );
        assert_eq!(
            Header::parse_prefix(b"{\"a\":1}").unwrap_err().to_string(),
            "not a Hanzo KMS model file"
        );
        let mut v2 = header().encode().unwrap();
        v2[6] = 2;
        assert!(
            Header::parse(&v2)
                .unwrap_err()
                .to_string()
                .contains("format version 2")
        );
    }

    #[test]
    fn layout_arithmetic() {
        let s = 4096u32;
        for len in [0u64, 1, 4095, 4096, 4097, 8192, 3 * 4096 + 5] {
            let l = Layout::for_plaintext(s, len);
            let back = Layout::from_body(s, l.body_len()).unwrap();
            assert_eq!(back, l, "len {len}");
            let total: u64 = (0..l.segments).map(|i| l.plaintext_len_of(i)).sum();
            assert_eq!(total, len);
        }
        assert!(Layout::from_body(s, 15).is_err());
        // An empty final segment after full ones is never produced.
        assert!(Layout::from_body(s, 4096 + 16 + 16).is_err());
        assert_eq!(
            Layout::for_plaintext(s, 10000).segments_for(4000, 4200),
            0..2
        );
        assert_eq!(
            Layout::for_plaintext(s, 10000).segments_for(9000, 10000),
            2..3
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Header::parse_prefix(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.push(VERSION);
            with_magic.extend_from_slice(&bytes);
            let _ = Header::parse_prefix(&with_magic);
        }

        #[test]
        fn encode_parse_round_trip(
            model in "[a-z0-9:]{1,40}", meta in proptest::collection::vec(any::<u8>(), 0..100),
            name in "[a-z0-9:]{1,60}", version in 1u32.., wrapped in proptest::collection::vec(any::<u8>(), 1..100),
            seg in 12u32..=26,
        ) {
            let h = Header { segment_size: 1 << seg, model_id: model, metadata: meta, key_name: name, key_version: version, wrapped_dek: wrapped, ..header() };
            let bytes = h.encode().unwrap();
            prop_assert_eq!(Header::parse(&bytes).unwrap(), (h, bytes.len()));
        }
    }
}
