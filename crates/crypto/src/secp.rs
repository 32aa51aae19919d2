//! secp256k1 signing through a blinded libsecp256k1 context of each thread's own.
//!
//! libsecp256k1 blinds the computation of `k·G` (the part of a signature that touches the secret
//! nonce) with a random value held in its context, so that power or timing traces from many
//! signatures cannot be combined. The library's documentation asks for a context randomized
//! before its first use and, as defence in depth, again "before every few computations".
//!
//! `secp256k1` 0.33, our crate for everything else on this curve, signs only through its own
//! thread-local context and re-randomizes it after every signature. A re-randomization costs
//! about as much as the signature (one more `k·G`), so signing through it runs at about half of
//! libsecp256k1's speed (`hanzo-kms-bench server` prints both). Here each thread keeps a context
//! of its own (`secp256k1` 0.31, the last release with explicit contexts), seeded from the
//! operating system's random generator when first used and again after every
//! [`SIGNATURES_PER_SEED`] signatures. If no fresh seed can be had, nothing is signed.

use std::cell::RefCell;

use hanzo_kms_core::{Error, ErrorKind, Result};
use secp256k1_ctx as secp;
use zeroize::Zeroizing;

/// Signatures a context makes before it is randomized again.
pub const SIGNATURES_PER_SEED: u32 = 16;

struct Blinded {
    ctx: secp::Secp256k1<secp::SignOnly>,
    /// Signatures left before the next randomization.
    left: u32,
}

thread_local! {
    static CONTEXT: RefCell<Option<Blinded>> = const { RefCell::new(None) };
}

/// A fresh context seed from the operating system.
fn seed() -> Result<Zeroizing<[u8; 32]>> {
    let mut seed = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut seed[..]).map_err(|_| {
        Error::new(
            ErrorKind::Unavailable,
            "the random generator failed, so the secp256k1 context was not blinded and nothing was signed",
        )
    })?;
    Ok(seed)
}

/// Sign a 32-byte `digest` with the scalar `secret`: the compact `r‖s` (low S) and the
/// recovery id (0 or 1, or in theory 2 or 3, which the caller refuses).
pub fn sign_recoverable(digest: [u8; 32], secret: &[u8; 32]) -> Result<([u8; 64], i32)> {
    let mut sk = secp::SecretKey::from_byte_array(*secret).map_err(|_| {
        Error::new(
            ErrorKind::Corrupt,
            "secp256k1 material is not a valid scalar",
        )
    })?;
    let signed = CONTEXT.with(|cell| -> Result<_> {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| Error::internal("the secp256k1 context is in use on this thread"))?;
        let blinded = match slot.as_mut() {
            Some(b) if b.left > 0 => b,
            _ => {
                // A new context, or one due for a new blinding: randomize before use.
                let mut ctx = match slot.take() {
                    Some(b) => b.ctx,
                    None => secp::Secp256k1::signing_only(),
                };
                ctx.seeded_randomize(&*seed()?);
                slot.insert(Blinded {
                    ctx,
                    left: SIGNATURES_PER_SEED,
                })
            }
        };
        blinded.left -= 1;
        let sig = blinded
            .ctx
            .sign_ecdsa_recoverable(secp::Message::from_digest(digest), &sk);
        Ok(sig.serialize_compact())
    });
    sk.non_secure_erase();
    let (recid, rs) = signed?;
    Ok((rs, i32::from(recid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6979 makes the signature a function of key and digest alone, so the blinding (fresh
    /// on every 16th signature) must never change a signature, and each one must verify.
    #[test]
    fn blinding_never_changes_a_signature_and_each_verifies() {
        let secret = [0x2a; 32];
        let sk = secp256k1::SecretKey::from_secret_bytes(secret).unwrap();
        let pk = secp256k1::PublicKey::from_secret_key(&sk);
        let digest = [7u8; 32];
        let first = sign_recoverable(digest, &secret).unwrap();
        for i in 0..(3 * SIGNATURES_PER_SEED) {
            assert_eq!(
                sign_recoverable(digest, &secret).unwrap(),
                first,
                "signature {i}"
            );
        }
        // The same through secp256k1 0.33 (its own thread-local context).
        let theirs = secp256k1::ecdsa::RecoverableSignature::sign_ecdsa_recoverable(
            secp256k1::Message::from_digest(digest),
            &sk,
        );
        let (recid, rs) = theirs.serialize_compact();
        assert_eq!((rs, i32::from(recid.to_u8())), first);
        let recovered = secp256k1::ecdsa::RecoverableSignature::from_compact(&first.0, recid)
            .unwrap()
            .recover_ecdsa(secp256k1::Message::from_digest(digest))
            .unwrap();
        assert_eq!(recovered, pk);
    }

    #[test]
    fn a_scalar_out_of_range_is_refused() {
        let e = sign_recoverable([1; 32], &[0xff; 32]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = sign_recoverable([1; 32], &[0; 32]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    /// Every thread blinds a context of its own; they agree.
    #[test]
    fn threads_sign_alike() {
        let secret = [0x11; 32];
        let here = sign_recoverable([3; 32], &secret).unwrap();
        let there = std::thread::spawn(move || sign_recoverable([3; 32], &secret).unwrap())
            .join()
            .unwrap();
        assert_eq!(here, there);
    }
}
