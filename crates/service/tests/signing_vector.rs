//! The worked vectors in docs/signing.md, recomputed and compared with the document.
//! (scripts/eip712_interop.py checks the same digests and the signer with eth-account.)

use hanzo_kms_core::eip712::{
    Address, B32, Domain, HMMSettlement, PoAIAttestation, PoAIBatch, U256,
};
use hanzo_kms_core::{eth, merkle};

fn doc_values() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/signing.md"
    ))
    .unwrap();
    let mut out = Vec::new();
    for block in doc.split("```text vector\n").skip(1) {
        for line in block[..block.find("```").unwrap()].lines() {
            if let Some((k, v)) = line.split_once(" = ") {
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

#[test]
fn docs_signing_worked_vectors() {
    let sk = secp256k1::SecretKey::from_secret_bytes(
        hex::decode("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap();
    let pk = secp256k1::PublicKey::from_secret_key(&sk).serialize_uncompressed();
    let address = eth::to_checksum(&eth::address(&pk).unwrap());
    let domain = Domain::new(96369, None);
    let sign = |digest: [u8; 32]| -> String {
        let (recid, rs) = secp256k1::ecdsa::RecoverableSignature::sign_ecdsa_recoverable(
            secp256k1::Message::from_digest(digest),
            &sk,
        )
        .serialize_compact();
        let mut sig = rs.to_vec();
        sig.push(27 + recid.to_u8());
        assert!(
            hanzo_kms_crypto::verify::recover_secp256k1(&digest, &sig).is_some_and(|p| p == pk)
        );
        format!("0x{}", hex::encode(sig))
    };
    let att = PoAIAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: B32([0x11; 32]),
        output_hash: B32([0x22; 32]),
        timestamp: 1_795_000_000,
        compute_time_ms: 1500,
        node_id: "node-1".into(),
        nonce: Some(B32([0x33; 32])),
    };
    let att_digest = domain.digest(&att.struct_hash().unwrap());
    let settlement = HMMSettlement {
        job_id: "job-42".into(),
        provider: Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap(),
        consumer: Address::parse("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359").unwrap(),
        amount: U256::parse_decimal("1000000000000000000").unwrap(),
        attestation_digest: B32(att_digest),
        timestamp: 1_795_000_100,
        expiry: 1_795_086_500,
        nonce: Some(B32([0x44; 32])),
    };
    let set_digest = domain.digest(&settlement.struct_hash().unwrap());
    let second = PoAIAttestation {
        node_id: "node-2".into(),
        nonce: Some(B32([0x55; 32])),
        ..att.clone()
    };
    let second_digest = domain.digest(&second.struct_hash().unwrap());
    let (root, proofs) = merkle::build(&[att_digest, second_digest]);
    let batch = PoAIBatch {
        root: B32(root),
        count: 2,
        timestamp: 1_795_000_200,
    };
    let batch_digest = domain.digest(&batch.struct_hash());
    let with_contract = Domain::new(
        96369,
        Some(Address::parse("0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC").unwrap()),
    );
    let hx = |b: [u8; 32]| format!("0x{}", hex::encode(b));
    let computed = [
        ("signer", address.clone()),
        ("domain_separator", hx(domain.separator())),
        ("attestation_struct_hash", hx(att.struct_hash().unwrap())),
        ("attestation_digest", hx(att_digest)),
        ("attestation_signature", sign(att_digest)),
        (
            "settlement_struct_hash",
            hx(settlement.struct_hash().unwrap()),
        ),
        ("settlement_digest", hx(set_digest)),
        ("settlement_signature", sign(set_digest)),
        ("second_attestation_digest", hx(second_digest)),
        ("batch_root", hx(root)),
        ("batch_proof_0", hx(proofs[0][0].sibling)),
        ("batch_digest", hx(batch_digest)),
        ("batch_signature", sign(batch_digest)),
        (
            "domain_separator_with_contract",
            hx(with_contract.separator()),
        ),
    ];
    assert!(!proofs[0][0].sibling_is_left);
    let doc = doc_values();
    let wrong: Vec<String> = computed
        .iter()
        .filter(|(k, v)| doc.iter().find(|(dk, _)| dk == k).map(|(_, dv)| dv) != Some(v))
        .map(|(k, v)| format!("{k:<30} = {v}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "docs/signing.md does not match; computed:\n{}",
        wrong.join("\n")
    );
}
