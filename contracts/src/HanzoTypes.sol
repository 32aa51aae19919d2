// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title The signed objects of Hanzo KMS and their EIP-712 struct hashes.
/// @notice Field order and types are those of the EIP-712 type strings in docs/signing.md, so the
/// ABI tuple of each struct reads like its JSON (`model_id` is `modelId`, and so on).

/// A PoAI attestation, as `hanzo-kms poai sign` signs it.
struct Attestation {
    string modelId;
    bytes32 inputHash;
    bytes32 outputHash;
    uint64 timestamp;
    uint64 computeTimeMs;
    string nodeId;
    bytes32 nonce;
}

/// An HMM settlement, as `hanzo-kms hmm sign` signs it.
struct Settlement {
    string jobId;
    address provider;
    address consumer;
    uint256 amount;
    bytes32 attestationDigest;
    uint64 timestamp;
    uint64 expiry;
    bytes32 nonce;
}

/// One step of a batch item's Merkle proof, from its leaf upwards: the sibling's hash and
/// whether the sibling is on the left (the `proof` entries `{hash, left}` of `poai sign-batch`).
struct ProofStep {
    bytes32 sibling;
    bool left;
}

/// A batch item's proof of inclusion under a signed `PoAIBatch`: the batch (`root`, `count`,
/// `timestamp`), its signature, and the item's `index` and `proof`.
struct BatchProof {
    bytes32 root;
    uint64 count;
    uint64 timestamp;
    bytes signature;
    uint64 index;
    ProofStep[] proof;
}

/// @notice EIP-712 struct hashes and the batch tree's rules (docs/signing.md, "Digest" and
/// "Batches (Merkle)"). Written with scratch memory past the free memory pointer, so no hash
/// allocates.
library HanzoHash {
    bytes32 internal constant ATTESTATION_TYPEHASH = keccak256(
        "PoAIAttestation(string modelId,bytes32 inputHash,bytes32 outputHash,uint64 timestamp,uint64 computeTimeMs,string nodeId,bytes32 nonce)"
    );
    bytes32 internal constant SETTLEMENT_TYPEHASH = keccak256(
        "HMMSettlement(string jobId,address provider,address consumer,uint256 amount,bytes32 attestationDigest,uint64 timestamp,uint64 expiry,bytes32 nonce)"
    );
    bytes32 internal constant BATCH_TYPEHASH = keccak256("PoAIBatch(bytes32 root,uint64 count,uint64 timestamp)");

    /// hashStruct(PoAIAttestation), and keccak256 of its modelId and nodeId (the registry's keys).
    function attestation(Attestation calldata a)
        internal
        pure
        returns (bytes32 h, bytes32 modelHash, bytes32 nodeHash)
    {
        modelHash = str(a.modelId);
        nodeHash = str(a.nodeId);
        bytes32 inputHash = a.inputHash;
        bytes32 outputHash = a.outputHash;
        uint64 ts = a.timestamp;
        uint64 computeTimeMs = a.computeTimeMs;
        bytes32 nonce = a.nonce;
        bytes32 typeHash = ATTESTATION_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, typeHash)
            mstore(add(p, 0x20), modelHash)
            mstore(add(p, 0x40), inputHash)
            mstore(add(p, 0x60), outputHash)
            mstore(add(p, 0x80), ts)
            mstore(add(p, 0xa0), computeTimeMs)
            mstore(add(p, 0xc0), nodeHash)
            mstore(add(p, 0xe0), nonce)
            h := keccak256(p, 0x100)
        }
    }

    /// hashStruct(HMMSettlement).
    function settlement(Settlement calldata s) internal pure returns (bytes32 h) {
        bytes32 jobHash = str(s.jobId);
        address provider = s.provider;
        address consumer = s.consumer;
        uint256 amount = s.amount;
        bytes32 attestationDigest = s.attestationDigest;
        uint64 ts = s.timestamp;
        uint64 expiry = s.expiry;
        bytes32 nonce = s.nonce;
        bytes32 typeHash = SETTLEMENT_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, typeHash)
            mstore(add(p, 0x20), jobHash)
            mstore(add(p, 0x40), provider)
            mstore(add(p, 0x60), consumer)
            mstore(add(p, 0x80), amount)
            mstore(add(p, 0xa0), attestationDigest)
            mstore(add(p, 0xc0), ts)
            mstore(add(p, 0xe0), expiry)
            mstore(add(p, 0x100), nonce)
            h := keccak256(p, 0x120)
        }
    }

    /// hashStruct(PoAIBatch).
    function batch(bytes32 batchRoot, uint64 count, uint64 ts) internal pure returns (bytes32 h) {
        bytes32 typeHash = BATCH_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, typeHash)
            mstore(add(p, 0x20), batchRoot)
            mstore(add(p, 0x40), count)
            mstore(add(p, 0x60), ts)
            h := keccak256(p, 0x80)
        }
    }

    /// The root that `proof` leads to from the leaf of digest `d`: leaf(d) = keccak256(0x00 ‖ d),
    /// node(l, r) = keccak256(0x01 ‖ l ‖ r), each step's sibling on the side it names. Levels
    /// where the node was carried up unchanged (an odd node at the end) have no step.
    function merkleRoot(bytes32 d, ProofStep[] calldata proof) internal pure returns (bytes32 node) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0x00)
            mstore(add(p, 1), d)
            node := keccak256(p, 0x21)
        }
        uint256 n = proof.length;
        for (uint256 i; i < n; ++i) {
            bytes32 sibling = proof[i].sibling;
            bool left = proof[i].left;
            assembly ("memory-safe") {
                let p := mload(0x40)
                mstore8(p, 0x01)
                switch left
                case 0 {
                    mstore(add(p, 1), node)
                    mstore(add(p, 0x21), sibling)
                }
                default {
                    mstore(add(p, 1), sibling)
                    mstore(add(p, 0x21), node)
                }
                node := keccak256(p, 0x41)
            }
        }
    }

    /// keccak256 of a calldata string's UTF-8 bytes (EIP-712's encoding of `string`).
    function str(string calldata s) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            calldatacopy(p, s.offset, s.length)
            h := keccak256(p, s.length)
        }
    }
}
