//! The worked vector in docs/format.md, recomputed from the spec's own definitions (HKDF and
//! AES-GCM called directly), and through the crate, and compared with the document.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use hanzo_kms_core::SecretKey32;
use hanzo_kms_core::weights::Header;
use hanzo_kms_weights::{Draft, FileCipher, dek_aad, encrypt_to_vec};

struct L32;
impl KeyType for L32 {
    fn len(&self) -> usize {
        32
    }
}

fn seq(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start + i as u8).collect()
}

fn doc_values() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/format.md"))
        .unwrap();
    let mut out = Vec::new();
    for block in doc.split("```text vector\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        for line in block.lines() {
            if let Some((k, v)) = line.split_once(" = ") {
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

#[test]
fn docs_format_worked_vector() {
    let kek = seq(0x00, 32);
    let dek_bytes = seq(0x20, 32);
    let salt: [u8; 32] = seq(0x40, 32).try_into().unwrap();
    let prefix: [u8; 7] = seq(0x60, 7).try_into().unwrap();
    let wrap_nonce: [u8; 12] = seq(0x70, 12).try_into().unwrap();
    let metadata = b"{\"format\":\"safetensors\"}";
    let plaintext: Vec<u8> = (0..4112usize).map(|i| (i % 251) as u8).collect();

    // Through the crate.
    let dek = SecretKey32::from_slice(&dek_bytes).unwrap();
    let draft = Draft::with_randomness("acme:gpt4", metadata, Some(4096), salt, prefix).unwrap();
    let aad = draft.dek_aad("model:acme:gpt4", 1);
    let kek_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &kek).unwrap());
    let mut wrapped = dek_bytes.clone();
    kek_key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(wrap_nonce),
            Aad::from(&aad),
            &mut wrapped,
        )
        .unwrap();
    let wrapped = [wrap_nonce.to_vec(), wrapped].concat();
    let (header, cipher) = draft
        .finish("model:acme:gpt4", 1, wrapped.clone(), &dek)
        .unwrap();
    let file = encrypt_to_vec(&header, &cipher, &plaintext, 2).unwrap();
    let header_bytes = header.encode().unwrap();
    assert_eq!(dek_aad(&header), aad);

    // Independently, from the spec's definitions.
    let file_part = header.file_part();
    assert_eq!(&file_part[..6], b"HZKMSW");
    let h = digest(&SHA256, &file_part);
    let prk = Salt::new(HKDF_SHA256, &salt).extract(&dek_bytes);
    let mut segment_key = [0u8; 32];
    let mut commitment = [0u8; 32];
    prk.expand(&[b"hanzo-kms/weights/v1/segment-key", h.as_ref()], L32)
        .unwrap()
        .fill(&mut segment_key)
        .unwrap();
    prk.expand(&[b"hanzo-kms/weights/v1/commitment", h.as_ref()], L32)
        .unwrap()
        .fill(&mut commitment)
        .unwrap();
    assert_eq!(header.commitment, commitment);
    let mut expected_aad = b"hanzo-kms/weights/v1/dek\0model:acme:gpt4\0".to_vec();
    expected_aad.extend_from_slice(&1u32.to_be_bytes());
    expected_aad.extend_from_slice(h.as_ref());
    assert_eq!(aad, expected_aad);
    let nonce = |i: u32, last: u8| -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&prefix);
        n[7..11].copy_from_slice(&i.to_be_bytes());
        n[11] = last;
        n
    };
    let seg_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &segment_key).unwrap());
    let mut s0 = plaintext[..4096].to_vec();
    let tag0 = seg_key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce(0, 0)),
            Aad::empty(),
            &mut s0,
        )
        .unwrap();
    let mut s1 = plaintext[4096..].to_vec();
    seg_key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce(1, 1)),
            Aad::empty(),
            &mut s1,
        )
        .unwrap();
    let expected_file = [
        header_bytes.clone(),
        s0.clone(),
        tag0.as_ref().to_vec(),
        s1.clone(),
    ]
    .concat();
    assert_eq!(file, expected_file, "the crate and the spec disagree");

    let computed = [
        ("h", hex::encode(h.as_ref())),
        ("segment_key", hex::encode(segment_key)),
        ("commitment", hex::encode(commitment)),
        ("dek_aad", hex::encode(&aad)),
        ("wrapped_dek", hex::encode(&wrapped)),
        ("header", hex::encode(&header_bytes)),
        ("nonce_0", hex::encode(nonce(0, 0))),
        ("nonce_1", hex::encode(nonce(1, 1))),
        ("segment_0_head", hex::encode(&s0[..32])),
        ("tag_0", hex::encode(tag0.as_ref())),
        ("segment_1", hex::encode(&s1)),
        ("file_sha256", hex::encode(digest(&SHA256, &file).as_ref())),
    ];
    let doc = doc_values();
    let mut missing = Vec::new();
    for (name, value) in &computed {
        match doc.iter().find(|(k, _)| k == name) {
            Some((_, v)) if v == value => {}
            _ => missing.push(format!("{name:<14} = {value}")),
        }
    }
    assert!(
        missing.is_empty(),
        "docs/format.md does not match; the computed values are:\n{}",
        missing.join("\n")
    );

    // And the file decrypts.
    let (parsed, n) = Header::parse(&file).unwrap();
    let c = FileCipher::open(&parsed, &dek, Some("acme:gpt4")).unwrap();
    let mut back = vec![0u8; plaintext.len()];
    c.open_body(&file[n..], &mut back, 1).unwrap();
    assert_eq!(back, plaintext);
}
