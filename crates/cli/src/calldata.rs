//! `poai calldata` and `hmm calldata`: the Solidity ABI encoding of a call to the contracts in
//! `contracts/src/` (docs/onchain.md) for output of `poai sign`, `poai sign-batch` and `hmm sign`,
//! ready to send as a transaction's data. Offline: it needs no data directory and no key.
//!
//! The encoder covers what those calls take (static words, `bytes`/`string`, tuples and dynamic
//! arrays of them), which is smaller than an ABI crate and its dependencies.

use hanzo_kms_core::eip712::{B32, HMMSettlement, PoAIAttestation, keccak256};
use hanzo_kms_core::signed::{BatchItem, SignedAttestation, SignedSettlement};
use hanzo_kms_core::{Error, Result};

/// The ABI type of an `Attestation` tuple.
const ATTESTATION: &str = "(string,bytes32,bytes32,uint64,uint64,string,bytes32)";
/// The ABI type of a `Settlement` tuple.
const SETTLEMENT: &str = "(string,address,address,uint256,bytes32,uint64,uint64,bytes32)";
/// The ABI type of a `BatchProof` tuple.
const BATCH_PROOF: &str = "(bytes32,uint64,uint64,bytes,uint64,(bytes32,bool)[])";

/// A call: the function's signature and its ABI-encoded data (selector first).
pub struct Call {
    pub function: String,
    pub data: Vec<u8>,
}

/// `recordAttestation(attestation, signature)`, or `verify` when `verify` is set.
pub fn attestation(signed: &SignedAttestation, verify: bool) -> Result<Call> {
    on_chain(&signed.algorithm)?;
    let name = if verify {
        "verify"
    } else {
        "recordAttestation"
    };
    Ok(call(
        &format!("{name}({ATTESTATION},bytes)"),
        &[
            attestation_tuple(&signed.attestation)?,
            bytes(&signed.signature.0),
        ],
    ))
}

/// `recordBatchItem(attestation, batch)`, or `verifyBatchProof` when `verify` is set.
pub fn batch_item(item: &BatchItem, verify: bool) -> Result<Call> {
    on_chain(&item.algorithm)?;
    let name = if verify {
        "verifyBatchProof"
    } else {
        "recordBatchItem"
    };
    Ok(call(
        &format!("{name}({ATTESTATION},{BATCH_PROOF})"),
        &[attestation_tuple(&item.attestation)?, batch_proof(item)],
    ))
}

/// What a settlement is submitted with.
pub enum Paying<'a> {
    /// Nothing: the attestation was recorded earlier (`settle`).
    Recorded,
    /// Its signed attestation, verified in the same call (`settleWithAttestation`).
    Attestation(&'a SignedAttestation),
    /// Its batch item, verified in the same call (`settleWithBatchItem`).
    Item(&'a BatchItem),
}

/// `settle`, `settleWithAttestation` or `settleWithBatchItem` for a signed settlement.
pub fn settlement(signed: &SignedSettlement, paying: Paying<'_>) -> Result<Call> {
    on_chain(&signed.algorithm)?;
    let s = settlement_tuple(&signed.settlement)?;
    let sig = bytes(&signed.signature.0);
    let digest = &signed.settlement.attestation_digest;
    Ok(match paying {
        Paying::Recorded => call(&format!("settle({SETTLEMENT},bytes)"), &[s, sig]),
        Paying::Attestation(a) => {
            on_chain(&a.algorithm)?;
            same_digest(digest, &a.digest)?;
            call(
                &format!("settleWithAttestation({SETTLEMENT},bytes,{ATTESTATION},bytes)"),
                &[
                    s,
                    sig,
                    attestation_tuple(&a.attestation)?,
                    bytes(&a.signature.0),
                ],
            )
        }
        Paying::Item(item) => {
            on_chain(&item.algorithm)?;
            same_digest(digest, &item.digest)?;
            call(
                &format!("settleWithBatchItem({SETTLEMENT},bytes,{ATTESTATION},{BATCH_PROOF})"),
                &[
                    s,
                    sig,
                    attestation_tuple(&item.attestation)?,
                    batch_proof(item),
                ],
            )
        }
    })
}

// ---- the objects as ABI values ----

fn attestation_tuple(a: &PoAIAttestation) -> Result<Value> {
    let nonce = a
        .nonce
        .ok_or_else(|| Error::invalid("attestation: nonce: missing (sign it first)"))?;
    Ok(Value::Tuple(vec![
        bytes(a.model_id.as_bytes()),
        Value::Word(a.input_hash.0),
        Value::Word(a.output_hash.0),
        uint(a.timestamp),
        uint(a.compute_time_ms),
        bytes(a.node_id.as_bytes()),
        Value::Word(nonce.0),
    ]))
}

fn settlement_tuple(s: &HMMSettlement) -> Result<Value> {
    let nonce = s
        .nonce
        .ok_or_else(|| Error::invalid("settlement: nonce: missing (sign it first)"))?;
    if s.expiry == 0 {
        return Err(Error::invalid(
            "settlement: expiry: missing (sign it first)",
        ));
    }
    Ok(Value::Tuple(vec![
        bytes(s.job_id.as_bytes()),
        address(&s.provider.0),
        address(&s.consumer.0),
        Value::Word(s.amount.0),
        Value::Word(s.attestation_digest.0),
        uint(s.timestamp),
        uint(s.expiry),
        Value::Word(nonce.0),
    ]))
}

fn batch_proof(item: &BatchItem) -> Value {
    let steps = item
        .proof
        .iter()
        .map(|p| Value::Tuple(vec![Value::Word(p.hash.0), uint(u64::from(p.left))]))
        .collect();
    Value::Tuple(vec![
        Value::Word(item.batch.root.0),
        uint(item.batch.count),
        uint(item.batch.timestamp),
        bytes(&item.signature.0),
        uint(item.index),
        Value::Array(steps),
    ])
}

/// The contracts recover secp256k1 signatures only (docs/signing.md, "On chain").
fn on_chain(algorithm: &str) -> Result<()> {
    if algorithm == "secp256k1" {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "a {algorithm} signature cannot be verified on chain: the contracts verify secp256k1 (docs/onchain.md)"
    )))
}

fn same_digest(settled: &B32, given: &B32) -> Result<()> {
    if settled == given {
        return Ok(());
    }
    Err(Error::invalid(
        "the attestation is not the one the settlement pays for (its digest is not attestation_digest)",
    ))
}

// ---- the ABI encoder ----

/// An ABI value: a 32-byte word (uint, address, bytes32, bool), `bytes` or `string`, a tuple, or
/// a dynamic array.
enum Value {
    Word([u8; 32]),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    Array(Vec<Value>),
}

fn uint(v: u64) -> Value {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&v.to_be_bytes());
    Value::Word(w)
}

fn address(a: &[u8; 20]) -> Value {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a);
    Value::Word(w)
}

fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

fn call(function: &str, args: &[Value]) -> Call {
    let mut data = keccak256(function.as_bytes())[..4].to_vec();
    data.extend(encode_tuple(args));
    Call {
        function: function.to_owned(),
        data,
    }
}

impl Value {
    fn is_dynamic(&self) -> bool {
        match self {
            Value::Word(_) => false,
            Value::Bytes(_) | Value::Array(_) => true,
            Value::Tuple(items) => items.iter().any(Value::is_dynamic),
        }
    }

    /// The size of a static value's encoding.
    fn static_size(&self) -> usize {
        match self {
            Value::Tuple(items) => items.iter().map(Value::static_size).sum(),
            _ => 32,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Value::Word(w) => w.to_vec(),
            Value::Bytes(b) => {
                let mut out = word(b.len());
                out.extend_from_slice(b);
                out.resize(32 + b.len().div_ceil(32) * 32, 0);
                out
            }
            Value::Tuple(items) => encode_tuple(items),
            Value::Array(items) => {
                let mut out = word(items.len());
                out.extend(encode_tuple(items));
                out
            }
        }
    }
}

/// Heads (a static value, or the offset of a dynamic one from the tuple's start), then tails.
fn encode_tuple(items: &[Value]) -> Vec<u8> {
    let head_size: usize = items
        .iter()
        .map(|v| if v.is_dynamic() { 32 } else { v.static_size() })
        .sum();
    let mut head = Vec::with_capacity(head_size);
    let mut tail = Vec::new();
    for v in items {
        if v.is_dynamic() {
            head.extend(word(head_size + tail.len()));
            tail.extend(v.encode());
        } else {
            head.extend(v.encode());
        }
    }
    head.extend(tail);
    head
}

fn word(n: usize) -> Vec<u8> {
    let mut w = vec![0u8; 32];
    w[24..].copy_from_slice(&(n as u64).to_be_bytes());
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        hex::encode(b)
    }

    /// The Solidity docs' own example: `f(uint256,uint32[],bytes10,bytes)` with
    /// `(0x123, [0x456, 0x789], "1234567890", "Hello, world!")`.
    #[test]
    fn solidity_docs_dynamic_example() {
        let mut b10 = [0u8; 32];
        b10[..10].copy_from_slice(b"1234567890");
        let args = [
            uint(0x123),
            Value::Array(vec![uint(0x456), uint(0x789)]),
            Value::Word(b10),
            bytes(b"Hello, world!"),
        ];
        let expected = concat!(
            "0000000000000000000000000000000000000000000000000000000000000123",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "3132333435363738393000000000000000000000000000000000000000000000",
            "00000000000000000000000000000000000000000000000000000000000000e0",
            "0000000000000000000000000000000000000000000000000000000000000002",
            "0000000000000000000000000000000000000000000000000000000000000456",
            "0000000000000000000000000000000000000000000000000000000000000789",
            "000000000000000000000000000000000000000000000000000000000000000d",
            "48656c6c6f2c20776f726c642100000000000000000000000000000000000000",
        );
        assert_eq!(hex(&encode_tuple(&args)), expected);
        let c = call("f(uint256,uint32[],bytes10,bytes)", &args);
        assert_eq!(hex(&c.data[..4]), "8be65246");
    }

    /// Static tuples in a dynamic array are inline; a tuple with a dynamic member is behind an
    /// offset.
    #[test]
    fn tuples_static_and_dynamic() {
        let steps = Value::Array(vec![
            Value::Tuple(vec![uint(1), uint(0)]),
            Value::Tuple(vec![uint(2), uint(1)]),
        ]);
        let enc = encode_tuple(&[steps]);
        // offset, length 2, then four words inline.
        assert_eq!(enc.len(), 32 * 6);
        assert_eq!(enc[31], 0x20);
        assert_eq!(enc[63], 2);
        assert_eq!(enc[95], 1);
        assert_eq!(enc[191], 1);
        let t = Value::Tuple(vec![uint(7), bytes(b"ab")]);
        assert!(t.is_dynamic());
        let enc = encode_tuple(&[t]);
        // offset 0x20; inside the tuple: 7, offset 0x40, length 2, "ab" padded.
        assert_eq!(enc.len(), 32 * 5);
        assert_eq!(enc[31], 0x20);
        assert_eq!(enc[63], 7);
        assert_eq!(enc[95], 0x40);
        assert_eq!(enc[127], 2);
        assert_eq!(&enc[128..130], b"ab");
    }

    #[test]
    fn bytes_padding() {
        for (n, size) in [(0usize, 32usize), (1, 64), (32, 64), (33, 96), (65, 128)] {
            assert_eq!(bytes(&vec![0xff; n]).encode().len(), size, "{n} bytes");
        }
    }
}
