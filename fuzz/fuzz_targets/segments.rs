//! The streaming segment parser on arbitrary bodies, under a fixed valid header and data key:
//! nothing panics, and whatever is accepted decrypts to exactly the reported length.
#![no_main]

use hanzo_kms_core::SecretKey32;
use hanzo_kms_weights::{Draft, decrypt_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dek = SecretKey32::from_bytes([5; 32]);
    let draft = Draft::with_randomness("fuzz:model", b"", Some(4096), [1; 32], [2; 7]).unwrap();
    let (_, cipher) = draft.finish("model:fuzz:model", 1, vec![0; 60], &dek).unwrap();
    let mut out = Vec::new();
    if let Ok(n) = decrypt_stream(&cipher, data, &mut out, 2, &|_| {}) {
        assert_eq!(n as usize, out.len());
    }
});
