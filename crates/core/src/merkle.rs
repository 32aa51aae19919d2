//! Merkle trees over attestation digests, for batch signing (docs/signing.md, "Batches").
//!
//! ```text
//! leaf(d)    = keccak256(0x00 ‖ d)                 d: an attestation's EIP-712 digest
//! node(l, r) = keccak256(0x01 ‖ l ‖ r)
//! ```
//! Each level pairs nodes left to right; an odd node out at the end of a level is carried up
//! unchanged (never duplicated, so no two leaf lists share a root). The domain-separated leaf and
//! node hashes mean an inner node cannot pose as a leaf. A proof lists, from the leaf up, each
//! sibling and whether it sits on the left.

use crate::eip712::keccak256;

pub fn leaf(digest: &[u8; 32]) -> [u8; 32] {
    let mut m = [0u8; 33];
    m[1..].copy_from_slice(digest);
    keccak256(&m)
}

pub fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut m = [0u8; 65];
    m[0] = 1;
    m[1..33].copy_from_slice(left);
    m[33..].copy_from_slice(right);
    keccak256(&m)
}

/// One step of a proof: the sibling hash and whether it is the left operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub sibling: [u8; 32],
    pub sibling_is_left: bool,
}

/// The root over `digests` and a proof for each of them. `digests` must not be empty.
pub fn build(digests: &[[u8; 32]]) -> ([u8; 32], Vec<Vec<Step>>) {
    let mut level: Vec<[u8; 32]> = digests.iter().map(leaf).collect();
    // positions[i] = index of item i's ancestor in the current level.
    let mut positions: Vec<usize> = (0..digests.len()).collect();
    let mut proofs: Vec<Vec<Step>> = vec![Vec::new(); digests.len()];
    while level.len() > 1 {
        for (item, pos) in positions.iter_mut().enumerate() {
            let sib = *pos ^ 1;
            if sib < level.len() {
                proofs[item].push(Step {
                    sibling: level[sib],
                    sibling_is_left: sib < *pos,
                });
            }
            *pos /= 2;
        }
        level = level
            .chunks(2)
            .map(|pair| {
                if pair.len() == 2 {
                    node(&pair[0], &pair[1])
                } else {
                    pair[0]
                }
            })
            .collect();
    }
    (level.first().copied().unwrap_or([0u8; 32]), proofs)
}

/// Recompute the root from a digest and its proof.
pub fn root_from_proof(digest: &[u8; 32], proof: &[Step]) -> [u8; 32] {
    proof.iter().fold(leaf(digest), |h, s| {
        if s.sibling_is_left {
            node(&s.sibling, &h)
        } else {
            node(&h, &s.sibling)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proof_verifies_for_every_size() {
        for n in 1..=33usize {
            let digests: Vec<[u8; 32]> = (0..n).map(|i| keccak256(&[i as u8])).collect();
            let (root, proofs) = build(&digests);
            for (i, p) in proofs.iter().enumerate() {
                assert_eq!(root_from_proof(&digests[i], p), root, "n={n} i={i}");
                assert!(p.len() <= (n as f64).log2().ceil() as usize);
                // The proof of item i does not prove any other digest.
                let other = keccak256(b"other");
                assert_ne!(root_from_proof(&other, p), root);
            }
        }
    }

    #[test]
    fn odd_nodes_are_carried_not_duplicated() {
        let d: Vec<[u8; 32]> = (0..3u8).map(|i| keccak256(&[i])).collect();
        let (root3, _) = build(&d);
        assert_eq!(root3, node(&node(&leaf(&d[0]), &leaf(&d[1])), &leaf(&d[2])));
        let d4 = [d[0], d[1], d[2], d[2]];
        assert_ne!(
            build(&d4).0,
            root3,
            "duplicating the last leaf must change the root"
        );
        assert_eq!(build(&d[..1]).0, leaf(&d[0]));
    }
}
