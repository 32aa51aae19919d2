//! Model-weight encryption: the cryptography of the format in `hanzo_kms_core::weights`
//! (specified in docs/format.md).
//!
//! ```text
//! h            = SHA-256(file_part)
//! prk          = HKDF-Extract[SHA-256](salt, DEK)
//! segment_key  = HKDF-Expand(prk, "hanzo-kms/weights/v1/segment-key" ‖ h, 32)
//! commitment   = HKDF-Expand(prk, "hanzo-kms/weights/v1/commitment" ‖ h, 32)
//! dek_aad      = "hanzo-kms/weights/v1/dek" ‖ 0x00 ‖ key_name ‖ 0x00 ‖ u32be(key_version) ‖ h
//! ```
//!
//! The provider wraps the DEK under the model's KEK with `dek_aad`, so the key slot (key name,
//! version, wrapped DEK) is authenticated by the unwrap, and the file part by the segment key and
//! the commitment. The commitment makes the file key-committing: it is a PRF output under the DEK,
//! so no file is valid under two data keys. Rewrapping replaces only the key slot.
//!
//! Everything here is parallel over `threads` workers and holds at most a bounded number of
//! segments in memory, whatever the file size.

#![forbid(unsafe_code)]

mod cipher;
pub mod safetensors;
mod stream;

pub use cipher::{Draft, FileCipher, dek_aad, encrypt_to_vec, file_part_hash};
pub use stream::{
    DecryptingReader, ReadAt, decrypt_stream, encrypt_stream, read_header, unwrap_io,
};

/// The number of worker threads to use by default: the available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
