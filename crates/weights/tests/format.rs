//! The format's cryptography, without a KMS: a known DEK, every tamper case on the body and the
//! file part, streams, random access. (Key-slot tampering needs the provider's unwrap and is
//! tested in crates/service/tests/model.rs.)

use std::io::{Read, Seek, SeekFrom};

use hanzo_kms_core::weights::{Header, Layout, TAG_LEN};
use hanzo_kms_core::{ErrorKind, SecretKey32};
use hanzo_kms_weights::{
    DecryptingReader, Draft, FileCipher, decrypt_stream, encrypt_stream, encrypt_to_vec,
};
use proptest::prelude::*;

const S: u32 = 4096;

fn make(dek: &SecretKey32, model: &str, salt: u8, segment: u32) -> (Header, FileCipher) {
    Draft::with_randomness(model, b"meta", Some(segment), [salt; 32], [salt ^ 0x55; 7])
        .unwrap()
        .finish("model:acme:gpt4", 1, vec![9; 60], dek)
        .unwrap()
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Decrypt file bytes with `dek`, as a model-`model` file. Any failure is the opaque error.
fn open(file: &[u8], dek: &SecretKey32, model: &str) -> Result<Vec<u8>, String> {
    let (h, n) = Header::parse(file).map_err(|e| e.to_string())?;
    let c = FileCipher::open(&h, dek, Some(model)).map_err(|e| e.to_string())?;
    let layout = h
        .layout((file.len() - n) as u64)
        .map_err(|e| e.to_string())?;
    let mut out = vec![0u8; layout.plaintext_len as usize];
    c.open_body(&file[n..], &mut out, 2)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn dek(b: u8) -> SecretKey32 {
    SecretKey32::from_bytes([b; 32])
}

fn encrypt(len: usize, threads: usize) -> (Vec<u8>, Vec<u8>) {
    let (h, c) = make(&dek(1), "acme:gpt4", 3, S);
    let p = plaintext(len);
    (encrypt_to_vec(&h, &c, &p, threads).unwrap(), p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn round_trip_any_size(
        len in prop_oneof![Just(0usize), Just(1), Just(S as usize - 1), Just(S as usize), Just(S as usize + 1), Just(7 * S as usize), 0usize..(6 * S as usize)],
        threads in 1usize..4,
    ) {
        let (file, p) = encrypt(len, threads);
        prop_assert_eq!(open(&file, &dek(1), "acme:gpt4").unwrap(), p.clone());
        // The stream API writes the same bytes (same header, deterministic nonces) and reads back.
        let (h, c) = make(&dek(1), "acme:gpt4", 3, S);
        let mut streamed = Vec::new();
        let n = encrypt_stream(&c, &h.encode().unwrap(), &p[..], &mut streamed, threads, &|_| {}).unwrap();
        prop_assert_eq!(n, len as u64);
        prop_assert_eq!(&streamed, &file);
        let hl = h.len();
        let mut back = Vec::new();
        let m = decrypt_stream(&c, &file[hl..], &mut back, threads, &|_| {}).unwrap();
        prop_assert_eq!(m, len as u64);
        prop_assert_eq!(back, p);
    }
}

#[test]
fn every_bit_flip_in_a_segment_and_the_file_part_fails() {
    let (file, _) = encrypt(2 * S as usize + 100, 2);
    let (h, hl) = Header::parse(&file).unwrap();
    // All bits of the file part, the commitment, and the whole second segment.
    let fp = h.file_part().len() + 32;
    let seg1 = hl + (S as usize + TAG_LEN)..hl + 2 * (S as usize + TAG_LEN);
    for byte in (0..fp).chain(seg1) {
        for bit in 0..8 {
            let mut bad = file.clone();
            bad[byte] ^= 1 << bit;
            let e = open(&bad, &dek(1), "acme:gpt4").unwrap_err();
            let ok = e == "authentication failed"
                || (byte < 7 && (e.contains("not a Hanzo KMS model file")));
            assert!(ok, "byte {byte} bit {bit}: {e}");
        }
    }
}

#[test]
fn truncation_extension_reordering_and_splicing_fail() {
    let s = S as usize + TAG_LEN;
    let (file, _) = encrypt(3 * S as usize + 10, 2);
    let (_, hl) = Header::parse(&file).unwrap();
    let auth = |f: &[u8]| {
        assert_eq!(
            open(f, &dek(1), "acme:gpt4").unwrap_err(),
            "authentication failed"
        )
    };
    auth(&file[..hl + 2 * s]); // at a segment boundary
    auth(&file[..hl + s + 100]); // inside a segment
    auth(&file[..hl]); // no segments at all
    auth(&file[..file.len() - 1]);
    let mut longer = file.clone();
    longer.extend_from_slice(&[0; 1]);
    auth(&longer);
    let mut longer = file.clone();
    longer.extend_from_slice(&file[hl..hl + s]);
    auth(&longer);
    // Two segments swapped.
    let mut swapped = file.clone();
    swapped[hl..hl + s].copy_from_slice(&file[hl + s..hl + 2 * s]);
    swapped[hl + s..hl + 2 * s].copy_from_slice(&file[hl..hl + s]);
    auth(&swapped);
    // A segment from another file (another DEK and salt, same KEK in real use).
    let (h2, c2) = make(&dek(2), "acme:gpt4", 4, S);
    let other = encrypt_to_vec(&h2, &c2, &plaintext(3 * S as usize + 10), 1).unwrap();
    let (_, hl2) = Header::parse(&other).unwrap();
    let mut spliced = file.clone();
    spliced[hl + s..hl + 2 * s].copy_from_slice(&other[hl2 + s..hl2 + 2 * s]);
    auth(&spliced);
    // A header from another file on these segments: its DEK does not open them.
    let mut rehead = other[..hl2].to_vec();
    rehead.extend_from_slice(&file[hl..]);
    assert_eq!(
        open(&rehead, &dek(2), "acme:gpt4").unwrap_err(),
        "authentication failed"
    );
}

#[test]
fn model_id_and_dek_are_committed() {
    let (file, p) = encrypt(5000, 1);
    assert_eq!(
        open(&file, &dek(1), "acme:gpt5").unwrap_err(),
        "authentication failed"
    );
    assert_eq!(
        open(&file, &dek(9), "acme:gpt4").unwrap_err(),
        "authentication failed"
    );
    assert_eq!(open(&file, &dek(1), "acme:gpt4").unwrap(), p);
    // Rewrap: a new key slot over the same file part keeps the commitment and the segments.
    let (mut h, hl) = Header::parse(&file).unwrap();
    h.key_version = 2;
    h.wrapped_dek = vec![1; 40];
    let mut rewrapped = h.encode().unwrap();
    rewrapped.extend_from_slice(&file[hl..]);
    assert_eq!(open(&rewrapped, &dek(1), "acme:gpt4").unwrap(), p);
}

#[test]
fn reader_decrypts_only_the_segments_it_needs() {
    let len = 10 * S as usize + 123;
    let (file, p) = encrypt(len, 2);
    let (h, hl) = Header::parse(&file).unwrap();
    let c = FileCipher::open(&h, &dek(1), None).unwrap();
    let mut r = DecryptingReader::new(file.clone(), &h, hl as u64, c, 2).unwrap();
    assert_eq!(r.len(), len as u64);
    // Opening authenticates the final segment; a range inside one segment costs one more.
    assert_eq!(r.segments_decrypted(), 1);
    assert_eq!(
        r.read_range(S as u64 * 3 + 10, 100).unwrap(),
        &p[S as usize * 3 + 10..S as usize * 3 + 110]
    );
    assert_eq!(r.segments_decrypted(), 2);
    // A range across a boundary costs two.
    assert_eq!(
        r.read_range(S as u64 * 5 - 5, 10).unwrap(),
        &p[S as usize * 5 - 5..S as usize * 5 + 5]
    );
    assert_eq!(r.segments_decrypted(), 4);
    // Seek + Read agree with the plaintext everywhere, including the end.
    for (pos, n) in [
        (0usize, 1usize),
        (len - 1, 1),
        (len - 200, 200),
        (S as usize - 1, 2 * S as usize + 3),
        (0, len),
    ] {
        r.seek(SeekFrom::Start(pos as u64)).unwrap();
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, &p[pos..pos + n], "at {pos}+{n}");
    }
    let mut tail = Vec::new();
    r.seek(SeekFrom::End(-7)).unwrap();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &p[len - 7..]);
    assert!(r.read_range(len as u64 - 1, 2).is_err());
    // A tampered segment is reported when read, as the opaque error.
    let mut bad = file.clone();
    bad[hl + 4 * (S as usize + TAG_LEN) + 3] ^= 1;
    let c = FileCipher::open(&h, &dek(1), None).unwrap();
    let mut r = DecryptingReader::new(bad, &h, hl as u64, c, 2).unwrap();
    assert!(r.read_range(0, S as u64).is_ok());
    let e = r.read_range(4 * S as u64, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed);
}

#[test]
fn reader_refuses_truncated_or_extended_files_before_any_read() {
    let s = S as usize + TAG_LEN;
    let (file, _) = encrypt(4 * S as usize, 2);
    let (h, hl) = Header::parse(&file).unwrap();
    for bad in [
        file[..hl + 2 * s].to_vec(),
        [file.clone(), file[hl..hl + s].to_vec()].concat(),
    ] {
        let c = FileCipher::open(&h, &dek(1), None).unwrap();
        let e = DecryptingReader::new(bad, &h, hl as u64, c, 2)
            .err()
            .expect("must refuse");
        assert_eq!(e.kind(), ErrorKind::AuthenticationFailed);
    }
}

#[test]
fn stream_decrypt_rejects_bad_bodies() {
    let (file, _) = encrypt(5 * S as usize, 2);
    let (h, hl) = Header::parse(&file).unwrap();
    let c = FileCipher::open(&h, &dek(1), None).unwrap();
    let s = S as usize + TAG_LEN;
    for body in [
        &file[hl..hl + 2 * s],
        &file[hl..hl + 2 * s + 17],
        &file[hl..hl],
        &file[hl..file.len() - 3],
    ] {
        let mut sink = Vec::new();
        let e = decrypt_stream(&c, body, &mut sink, 2, &|_| {}).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::AuthenticationFailed,
            "body of {} bytes",
            body.len()
        );
    }
    assert_eq!(Layout::for_plaintext(S, 5 * S as u64).segments, 5);
}
