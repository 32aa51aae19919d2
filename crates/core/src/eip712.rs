//! Signed objects: PoAI attestations, HMM settlements and PoAI batches as EIP-712 typed data
//! (DESIGN.md §4; specified with worked vectors in docs/signing.md).
//!
//! ```text
//! domain    = EIP712Domain(string name,string version,uint256 chainId[,address verifyingContract])
//!             with name "Hanzo KMS", version "1", chainId from config (default 96369)
//! digest    = keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ hashStruct(message))
//! hashStruct(m) = keccak256(typeHash ‖ encodeData(m)); string ↦ keccak256(utf8),
//!             bytes32 ↦ itself, uint64/uint256 ↦ 32-byte big-endian, address ↦ left-padded to 32
//! ```
//!
//! JSON forms use snake_case names; hashes and nonces are `0x` + 64 hex digits, addresses `0x` +
//! 40 hex digits (a mixed-case address must carry a valid EIP-55 checksum), amounts are decimal
//! strings of a uint256, times are unix seconds. Unknown fields are refused; every error names
//! its field.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest, Keccak256};

use crate::error::{Error, ErrorKind, Result};

/// `keccak256(data)`.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

pub const POAI_ATTESTATION_TYPE: &str = "PoAIAttestation(string modelId,bytes32 inputHash,bytes32 outputHash,uint64 timestamp,uint64 computeTimeMs,string nodeId,bytes32 nonce)";
pub const HMM_SETTLEMENT_TYPE: &str = "HMMSettlement(string jobId,address provider,address consumer,uint256 amount,bytes32 attestationDigest,uint64 timestamp,uint64 expiry,bytes32 nonce)";
pub const POAI_BATCH_TYPE: &str = "PoAIBatch(bytes32 root,uint64 count,uint64 timestamp)";
/// `keccak256` of each type string, computed once.
static TYPE_HASHES: std::sync::LazyLock<[[u8; 32]; 3]> = std::sync::LazyLock::new(|| {
    [
        keccak256(POAI_ATTESTATION_TYPE.as_bytes()),
        keccak256(HMM_SETTLEMENT_TYPE.as_bytes()),
        keccak256(POAI_BATCH_TYPE.as_bytes()),
    ]
});

const DOMAIN_TYPE: &str = "EIP712Domain(string name,string version,uint256 chainId)";
const DOMAIN_TYPE_WITH_CONTRACT: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";

/// 32 bytes, written `0x` + 64 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct B32(pub [u8; 32]);

/// A 20-byte address, written `0x` + 40 hex digits (EIP-55 checksummed on output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Address(pub [u8; 20]);

/// A uint256, big-endian, written as a decimal string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct U256(pub [u8; 32]);

/// The EIP-712 domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub chain_id: u64,
    pub verifying_contract: Option<Address>,
    separator: [u8; 32],
}

impl Domain {
    pub const NAME: &'static str = "Hanzo KMS";
    pub const VERSION: &'static str = "1";

    /// A domain; its separator is computed here, once.
    pub fn new(chain_id: u64, verifying_contract: Option<Address>) -> Self {
        let mut d = Self {
            chain_id,
            verifying_contract,
            separator: [0; 32],
        };
        d.separator = d.compute_separator();
        d
    }

    /// `hashStruct(domain)`.
    pub fn separator(&self) -> [u8; 32] {
        self.separator
    }

    fn compute_separator(&self) -> [u8; 32] {
        let mut enc = Vec::with_capacity(160);
        let ty = if self.verifying_contract.is_some() {
            DOMAIN_TYPE_WITH_CONTRACT
        } else {
            DOMAIN_TYPE
        };
        enc.extend_from_slice(&keccak256(ty.as_bytes()));
        enc.extend_from_slice(&keccak256(Self::NAME.as_bytes()));
        enc.extend_from_slice(&keccak256(Self::VERSION.as_bytes()));
        enc.extend_from_slice(&word_u64(self.chain_id));
        if let Some(a) = self.verifying_contract {
            enc.extend_from_slice(&word_address(&a));
        }
        keccak256(&enc)
    }

    /// `keccak256(0x1901 ‖ domainSeparator ‖ structHash)`.
    pub fn digest(&self, struct_hash: &[u8; 32]) -> [u8; 32] {
        let mut m = Vec::with_capacity(66);
        m.extend_from_slice(&[0x19, 0x01]);
        m.extend_from_slice(&self.separator);
        m.extend_from_slice(struct_hash);
        keccak256(&m)
    }
}

/// A Proof-of-AI attestation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoAIAttestation {
    pub model_id: String,
    pub input_hash: B32,
    pub output_hash: B32,
    pub timestamp: u64,
    pub compute_time_ms: u64,
    pub node_id: String,
    /// Filled with 32 random bytes before signing when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub nonce: Option<B32>,
}

/// An HMM compute-marketplace settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HMMSettlement {
    pub job_id: String,
    pub provider: Address,
    pub consumer: Address,
    pub amount: U256,
    pub attestation_digest: B32,
    pub timestamp: u64,
    /// Unix seconds; when absent (0), `timestamp + settlement_expiry` from the config.
    #[serde(default)]
    pub expiry: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub nonce: Option<B32>,
}

/// Bytes written `0x` + hex (signatures, public keys).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HexBytes(pub Vec<u8>);

impl HexBytes {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let h = strip_0x(s)?;
        if h.len() > 16384 {
            return Err("too long".into());
        }
        hex::decode(h)
            .map(Self)
            .map_err(|_| format!("'{}' is not hexadecimal of whole bytes", short(s)))
    }

    pub fn to_hex(&self) -> String {
        prefixed_hex(&self.0)
    }
}

/// Lowercase hex digits.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out`, two digits a byte (`out` is twice as long).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 15)];
    }
}

/// `0x` + lowercase hex of `bytes`, in one allocation. Every signed answer carries several of
/// these; `format!` over `hex::encode` took two allocations and a `char` at a time.
pub fn prefixed_hex(bytes: &[u8]) -> String {
    let mut out = vec![0; 2 + 2 * bytes.len()];
    out[..2].copy_from_slice(b"0x");
    write_hex(bytes, &mut out[2..]);
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Lowercase hex of 32 bytes, written into `out` (no allocation).
pub fn hex32<'o>(bytes: &[u8; 32], out: &'o mut [u8; 64]) -> &'o str {
    write_hex(bytes, out);
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// `0x` + 64 hex digits of `bytes`, written into `out` (no allocation).
fn prefixed_hex32<'o>(bytes: &[u8; 32], out: &'o mut [u8; 66]) -> &'o str {
    out[..2].copy_from_slice(b"0x");
    write_hex(bytes, &mut out[2..]);
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// One signature over the Merkle root of many attestation digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoAIBatch {
    pub root: B32,
    pub count: u64,
    pub timestamp: u64,
}

impl PoAIAttestation {
    /// `hashStruct`. The nonce must be set.
    pub fn struct_hash(&self) -> Result<[u8; 32]> {
        let nonce = self.nonce.ok_or_else(|| Error::invalid("nonce: missing"))?;
        let mut e = Vec::with_capacity(256);
        e.extend_from_slice(&TYPE_HASHES[0]);
        e.extend_from_slice(&keccak256(self.model_id.as_bytes()));
        e.extend_from_slice(&self.input_hash.0);
        e.extend_from_slice(&self.output_hash.0);
        e.extend_from_slice(&word_u64(self.timestamp));
        e.extend_from_slice(&word_u64(self.compute_time_ms));
        e.extend_from_slice(&keccak256(self.node_id.as_bytes()));
        e.extend_from_slice(&nonce.0);
        Ok(keccak256(&e))
    }
}

impl HMMSettlement {
    pub fn struct_hash(&self) -> Result<[u8; 32]> {
        let nonce = self.nonce.ok_or_else(|| Error::invalid("nonce: missing"))?;
        let mut e = Vec::with_capacity(288);
        e.extend_from_slice(&TYPE_HASHES[1]);
        e.extend_from_slice(&keccak256(self.job_id.as_bytes()));
        e.extend_from_slice(&word_address(&self.provider));
        e.extend_from_slice(&word_address(&self.consumer));
        e.extend_from_slice(&self.amount.0);
        e.extend_from_slice(&self.attestation_digest.0);
        e.extend_from_slice(&word_u64(self.timestamp));
        e.extend_from_slice(&word_u64(self.expiry));
        e.extend_from_slice(&nonce.0);
        Ok(keccak256(&e))
    }
}

impl PoAIBatch {
    pub fn struct_hash(&self) -> [u8; 32] {
        let mut e = Vec::with_capacity(128);
        e.extend_from_slice(&TYPE_HASHES[2]);
        e.extend_from_slice(&self.root.0);
        e.extend_from_slice(&word_u64(self.count));
        e.extend_from_slice(&word_u64(self.timestamp));
        keccak256(&e)
    }
}

fn word_u64(v: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&v.to_be_bytes());
    w
}

fn word_address(a: &Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(&a.0);
    w
}

/// For an optional field that may be absent but not `null` (the API document types it as what
/// it holds, not as nullable): `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Drop every `null` member of every object in `v`: a protobuf message's JSON form writes an
/// absent optional field as `null`, which this API's JSON form leaves out (and refuses).
pub fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Parse one JSON object of type `T`, naming the field of any error.
pub fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde_json appends " at line L column C"; keep it, it helps with files.
        if path == "." || path.is_empty() {
            Error::invalid(format!("{what}: {msg}"))
        } else {
            Error::invalid(format!("{what}: {path}: {msg}"))
        }
    })?;
    de.end()
        .map_err(|e| Error::invalid(format!("{what}: trailing data: {e}")))?;
    Ok(v)
}

// ---- encodings ------------------------------------------------------------------------------

fn strip_0x(s: &str) -> std::result::Result<&str, String> {
    s.strip_prefix("0x")
        .ok_or_else(|| format!("'{}' does not start with 0x", short(s)))
}

fn short(s: &str) -> String {
    let t: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        format!("{t}…")
    } else {
        t
    }
}

impl B32 {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let h = strip_0x(s)?;
        if h.len() != 64 {
            return Err(format!(
                "expected 0x and 64 hex digits, got {} digits",
                h.len()
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out)
            .map_err(|_| format!("'{}' is not hexadecimal", short(s)))?;
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        prefixed_hex32(&self.0, &mut [0; 66]).to_owned()
    }
}

impl Address {
    /// Parse `0x` + 40 hex digits. All-lowercase or all-uppercase is accepted as is; mixed case
    /// must be the EIP-55 checksum.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let h = strip_0x(s)?;
        if h.len() != 40 {
            return Err(format!(
                "expected 0x and 40 hex digits, got {} digits",
                h.len()
            ));
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(h, &mut out)
            .map_err(|_| format!("'{}' is not hexadecimal", short(s)))?;
        let mixed =
            h.chars().any(|c| c.is_ascii_lowercase()) && h.chars().any(|c| c.is_ascii_uppercase());
        if mixed && crate::eth::to_checksum(&out) != s {
            return Err(format!("'{s}' has a bad EIP-55 checksum"));
        }
        Ok(Self(out))
    }

    pub fn to_checksum(&self) -> String {
        crate::eth::to_checksum(&self.0)
    }
}

impl U256 {
    pub const MAX_DECIMAL: &'static str =
        "115792089237316195423570985008687907853269984665640564039457584007913129639935";

    /// Parse a decimal string of at most 2^256 − 1.
    pub fn parse_decimal(s: &str) -> std::result::Result<Self, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "'{}' is not a non-negative decimal integer",
                short(s)
            ));
        }
        let mut v = [0u8; 32];
        for d in s.bytes().map(|b| u32::from(b - b'0')) {
            // v = v * 10 + d, with overflow detection.
            let mut carry = d;
            for byte in v.iter_mut().rev() {
                let x = u32::from(*byte) * 10 + carry;
                *byte = (x & 0xff) as u8;
                carry = x >> 8;
            }
            if carry != 0 {
                return Err(format!("'{}' is larger than 2^256 - 1", short(s)));
            }
        }
        Ok(Self(v))
    }

    pub fn to_decimal(&self) -> String {
        let mut v = self.0;
        let mut digits = Vec::new();
        loop {
            let mut rem = 0u32;
            let mut zero = true;
            for byte in v.iter_mut() {
                let x = (rem << 8) | u32::from(*byte);
                *byte = (x / 10) as u8;
                rem = x % 10;
                zero &= *byte == 0;
            }
            digits.push(b'0' + rem as u8);
            if zero {
                break;
            }
        }
        digits.reverse();
        String::from_utf8(digits).unwrap_or_default()
    }
}

/// Reads a JSON string with `parse`, borrowing it where the input allows (no copy of the text).
struct ParseStr<T>(fn(&str) -> std::result::Result<T, String>);

impl<T> serde::de::Visitor<'_> for ParseStr<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

macro_rules! string_codec {
    ($t:ty, $parse:expr, $show:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&$show(self))
            }
        }
        string_codec!(@de $t, $parse);
    };
    (@de $t:ty, $parse:expr) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                d.deserialize_str(ParseStr($parse))
            }
        }
    };
}

impl Serialize for B32 {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(prefixed_hex32(&self.0, &mut [0; 66]))
    }
}

string_codec!(@de B32, B32::parse);
string_codec!(Address, Address::parse, Address::to_checksum);
string_codec!(U256, U256::parse_decimal, U256::to_decimal);
string_codec!(HexBytes, HexBytes::parse, HexBytes::to_hex);

/// Refuse empty or absurd strings in signed objects.
pub fn check_text(field: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 256 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{field}: must be 1 to 256 bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u256_decimal_round_trip_and_bounds() {
        assert_eq!(U256::parse_decimal("0").unwrap().to_decimal(), "0");
        assert_eq!(
            U256::parse_decimal("1000000000000000000")
                .unwrap()
                .to_decimal(),
            "1000000000000000000"
        );
        let max = U256::parse_decimal(U256::MAX_DECIMAL).unwrap();
        assert_eq!(max.0, [0xff; 32]);
        assert_eq!(max.to_decimal(), U256::MAX_DECIMAL);
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert!(
            U256::parse_decimal(over)
                .unwrap_err()
                .contains("larger than 2^256 - 1")
        );
        for bad in ["-1", "1.5", "0x10", "", " 1", "1e3"] {
            assert!(U256::parse_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_and_hashes_are_strict() {
        let a = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert_eq!(Address::parse(a).unwrap().to_checksum(), a);
        assert!(Address::parse(&a.to_lowercase()).is_ok());
        let bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert!(Address::parse(bad).unwrap_err().contains("checksum"));
        assert!(
            Address::parse("0x1234")
                .unwrap_err()
                .contains("40 hex digits")
        );
        assert!(
            Address::parse("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
                .unwrap_err()
                .contains("0x")
        );
        assert!(
            B32::parse(&format!("0x{}", "zz".repeat(32)))
                .unwrap_err()
                .contains("not hexadecimal")
        );
        assert!(
            B32::parse(&format!("0x{}", "00".repeat(31)))
                .unwrap_err()
                .contains("64 hex digits")
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        let ok = r#"{"model_id":"acme:gpt4","input_hash":"0x0000000000000000000000000000000000000000000000000000000000000001","output_hash":"0x0000000000000000000000000000000000000000000000000000000000000002","timestamp":1,"compute_time_ms":2,"node_id":"n"}"#;
        assert!(from_json::<PoAIAttestation>("attestation", ok).is_ok());
        let e = from_json::<PoAIAttestation>(
            "attestation",
            &ok.replace(
                "0x0000000000000000000000000000000000000000000000000000000000000002",
                "0x12",
            ),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("attestation: output_hash: expected 0x and 64 hex digits"),
            "{e}"
        );
        let e = from_json::<PoAIAttestation>(
            "attestation",
            &ok.replace("\"node_id\":\"n\"", "\"node_id\":\"n\",\"extra\":1"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        let e =
            from_json::<PoAIAttestation>("attestation", &ok.replace(",\"compute_time_ms\":2", ""))
                .unwrap_err();
        assert!(
            e.to_string().contains("missing field `compute_time_ms`"),
            "{e}"
        );
        let s = r#"{"job_id":"j","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"-5","attestation_digest":"0x0000000000000000000000000000000000000000000000000000000000000001","timestamp":1,"expiry":2}"#;
        let e = from_json::<HMMSettlement>("settlement", s).unwrap_err();
        assert!(
            e.to_string()
                .contains("settlement: amount: '-5' is not a non-negative decimal integer"),
            "{e}"
        );
    }

    #[test]
    fn hex_text_matches_the_hex_crate_and_reads_back() {
        let bytes: Vec<u8> = (0..=255u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        for n in [0, 1, 20, 32, 65, 256] {
            let b = &bytes[..n];
            assert_eq!(
                prefixed_hex(b),
                format!("0x{}", hex::encode(b)),
                "{n} bytes"
            );
            let h = HexBytes(b.to_vec());
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(json, format!("\"0x{}\"", hex::encode(b)));
            assert_eq!(serde_json::from_str::<HexBytes>(&json).unwrap(), h);
        }
        for b in [[0u8; 32], [0xff; 32], bytes[..32].try_into().unwrap()] {
            let b32 = B32(b);
            assert_eq!(hex32(&b, &mut [0; 64]), hex::encode(b));
            let text = format!("0x{}", hex::encode(b));
            assert_eq!(b32.to_hex(), text);
            let json = serde_json::to_string(&b32).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<B32>(&json).unwrap(), b32);
            // A string with escapes is read from serde's scratch copy, not borrowed.
            let escaped = json.replacen("0x", "\\u0030x", 1);
            assert_eq!(serde_json::from_str::<B32>(&escaped).unwrap(), b32);
            // An owned value (serde_json::Value) reads too.
            let v = serde_json::Value::String(text.clone());
            assert_eq!(serde_json::from_value::<B32>(v).unwrap(), b32);
        }
        // Not a string: the error says what was expected.
        let e = serde_json::from_str::<B32>("5").unwrap_err().to_string();
        assert!(e.contains("expected a string"), "{e}");
        let e = serde_json::from_str::<U256>("5").unwrap_err().to_string();
        assert!(e.contains("expected a string"), "{e}");
    }
}
