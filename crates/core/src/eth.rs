//! Ethereum addresses of secp256k1 public keys, with the EIP-55 mixed-case checksum.

use sha3::{Digest, Keccak256};

use crate::error::{Error, Result};

/// The 20-byte address of an uncompressed SEC1 public key (`0x04 ‖ X ‖ Y`):
/// the last 20 bytes of `keccak256(X ‖ Y)`.
pub fn address(uncompressed: &[u8]) -> Result<[u8; 20]> {
    if uncompressed.len() != 65 || uncompressed[0] != 0x04 {
        return Err(Error::invalid(
            "an Ethereum address needs a 65-byte uncompressed secp256k1 public key",
        ));
    }
    let hash = Keccak256::digest(&uncompressed[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Ok(out)
}

/// EIP-55 checksummed text form: `0x` and 40 hex digits, a letter upper-cased where the
/// corresponding nibble of `keccak256(lowercase hex)` is 8 or more.
pub fn to_checksum(address: &[u8; 20]) -> String {
    let lower = hex::encode(address);
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        if c.is_ascii_alphabetic() && nibble >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_vectors() {
        // The test vectors listed in EIP-55 itself.
        for v in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let mut raw = [0u8; 20];
            hex::decode_to_slice(v[2..].to_lowercase(), &mut raw).unwrap();
            assert_eq!(to_checksum(&raw), v);
        }
    }

    #[test]
    fn address_of_generator_point() {
        // Private key 1: public key is the generator G; its address is well known.
        let g = hex::decode(concat!(
            "04",
            "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
        ))
        .unwrap();
        assert_eq!(
            to_checksum(&address(&g).unwrap()),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        assert!(address(&g[..64]).is_err());
    }
}
