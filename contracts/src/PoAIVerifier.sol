// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {HanzoEIP712} from "./HanzoEIP712.sol";
import {Attestation, BatchProof, HanzoHash, ProofStep} from "./HanzoTypes.sol";

/// @title Verifies PoAI attestations and PoAI batch items signed by Hanzo KMS.
/// @notice An attestation is valid when its secp256k1 signature (65 bytes, low-S, v 27 or 28) over
/// its EIP-712 digest recovers to a signer the owner authorised for its model or for its node,
/// and `block.timestamp` is within `[timestamp − 60 s, timestamp + attestationTtl]`. A batch item
/// is valid when its Merkle proof leads to a root whose `PoAIBatch` signature is valid in the same
/// way, and the item's own attestation is within that window. Every refusal is a named error.
/// The `record*` functions verify and remember the digest, so that a settlement can pay for it
/// later (HMMSettlement, which is a PoAIVerifier, settles them).
contract PoAIVerifier is HanzoEIP712, Ownable2Step {
    /// Verification accepts attestations up to this far in the future (hanzo-kms's rule).
    uint64 public constant MAX_FUTURE_SECS = 60;
    /// A proof never has more steps than a tree of 2⁶⁴ leaves has levels.
    uint256 public constant MAX_PROOF_STEPS = 64;

    /// How long an attestation stays valid after its timestamp (hanzo-kms's
    /// `kms.hanzo.poai_signing.attestation_ttl`, 3600 s by default).
    uint64 public immutable attestationTtl;

    mapping(bytes32 modelIdHash => mapping(address signer => bool)) private _modelSigners;
    mapping(bytes32 nodeIdHash => mapping(address signer => bool)) private _nodeSigners;
    mapping(bytes32 digest => bool) private _recorded;

    /// The signer is authorised neither for the attestation's model nor for its node. Also what
    /// an edited field or a foreign domain gives: the signature then recovers to another address.
    error SignerNotAuthorised(address signer);
    /// `block.timestamp` is past `timestamp + attestationTtl`.
    error AttestationExpired(uint64 timestamp, uint256 blockTimestamp);
    /// `timestamp` is more than 60 s after `block.timestamp`.
    error AttestationNotYetValid(uint64 timestamp, uint256 blockTimestamp);
    /// The proof's root is not the batch's root (a proof of another batch or item, or an edited step).
    error MerkleRootMismatch(bytes32 computed, bytes32 root);
    /// The item's index is not below the batch's count.
    error BatchIndexOutOfRange(uint64 index, uint64 count);
    /// The proof has more steps than any tree of `count` ≤ 2⁶⁴ leaves.
    error ProofTooLong(uint256 steps);
    /// A signer cannot be the zero address.
    error ZeroSigner();
    /// The TTL must be positive.
    error ZeroTtl();

    /// The owner authorised (or withdrew) `signer` for the model `modelId`.
    event ModelSignerSet(bytes32 indexed modelIdHash, address indexed signer, bool authorised, string modelId);
    /// The owner authorised (or withdrew) `signer` for the node `nodeId`.
    event NodeSignerSet(bytes32 indexed nodeIdHash, address indexed signer, bool authorised, string nodeId);
    /// A valid attestation (alone or as a batch item) was recorded for later settlement.
    event AttestationRecorded(bytes32 indexed digest, bytes32 indexed modelIdHash, address indexed signer);

    /// @param owner_ who manages the signer registry (Ownable2Step: a transfer must be accepted).
    /// @param bindToContract true: the domain names this contract as `verifyingContract` (set
    /// hanzo-kms's `kms.hanzo.eip712.verifying_contract` to this contract's address); false: the
    /// domain has no `verifyingContract` (hanzo-kms's default).
    /// @param attestationTtl_ seconds an attestation stays valid (3600 in hanzo-kms's default).
    constructor(address owner_, bool bindToContract, uint64 attestationTtl_)
        HanzoEIP712(bindToContract ? address(this) : address(0))
        Ownable(owner_)
    {
        if (attestationTtl_ == 0) revert ZeroTtl();
        attestationTtl = attestationTtl_;
    }

    // ---- verification ----

    /// Checks a signed attestation and returns its EIP-712 digest and its signer; reverts with a
    /// named error otherwise.
    function verify(Attestation calldata attestation, bytes calldata signature)
        public
        view
        returns (bytes32 digest, address signer)
    {
        (bytes32 structHash, bytes32 modelHash, bytes32 nodeHash) = HanzoHash.attestation(attestation);
        digest = _digest(structHash);
        signer = _recover(digest, signature);
        _checkSigner(modelHash, nodeHash, signer);
        _checkWindow(attestation.timestamp);
    }

    /// Checks one batch item with only itself (docs/signing.md, "Batches (Merkle)"): its proof
    /// leads from its digest's leaf to `root`, `index < count`, the `PoAIBatch(root, count,
    /// batchTimestamp)` signature recovers to a signer authorised for the item's model or node,
    /// and the item's attestation is within its validity window. Returns the item's digest and
    /// the batch's signer.
    function verifyBatchItem(
        Attestation calldata attestation,
        bytes32 root,
        uint64 count,
        uint64 batchTimestamp,
        bytes calldata batchSignature,
        uint64 index,
        ProofStep[] calldata proof
    ) public view returns (bytes32 digest, address signer) {
        (bytes32 structHash, bytes32 modelHash, bytes32 nodeHash) = HanzoHash.attestation(attestation);
        digest = _digest(structHash);
        _checkInclusion(digest, root, count, index, proof);
        signer = _recover(_digest(HanzoHash.batch(root, count, batchTimestamp)), batchSignature);
        _checkSigner(modelHash, nodeHash, signer);
        _checkWindow(attestation.timestamp);
    }

    /// verifyBatchItem with the batch and proof in one struct (as HMMSettlement passes them).
    function verifyBatchProof(Attestation calldata attestation, BatchProof calldata batch)
        public
        view
        returns (bytes32 digest, address signer)
    {
        return verifyBatchItem(
            attestation, batch.root, batch.count, batch.timestamp, batch.signature, batch.index, batch.proof
        );
    }

    /// verify, then remember the digest as a valid attestation (idempotent).
    function recordAttestation(Attestation calldata attestation, bytes calldata signature)
        external
        returns (bytes32 digest)
    {
        address signer;
        (digest, signer) = verify(attestation, signature);
        _record(digest, attestation, signer);
    }

    /// verifyBatchProof, then remember the item's digest as a valid attestation (idempotent).
    function recordBatchItem(Attestation calldata attestation, BatchProof calldata batch)
        external
        returns (bytes32 digest)
    {
        address signer;
        (digest, signer) = verifyBatchProof(attestation, batch);
        _record(digest, attestation, signer);
    }

    /// Whether `digest` was recorded by recordAttestation or recordBatchItem.
    function isRecorded(bytes32 digest) public view returns (bool) {
        return _recorded[digest];
    }

    /// The EIP-712 digest of an attestation, as hanzo-kms prints it in `digest`.
    function attestationDigest(Attestation calldata attestation) external view returns (bytes32) {
        (bytes32 structHash,,) = HanzoHash.attestation(attestation);
        return _digest(structHash);
    }

    /// The EIP-712 digest of a batch, as hanzo-kms prints it in `batch_digest`.
    function batchDigest(bytes32 root, uint64 count, uint64 batchTimestamp) external view returns (bytes32) {
        return _digest(HanzoHash.batch(root, count, batchTimestamp));
    }

    // ---- registry ----

    /// Authorise (or withdraw) `signer` for attestations of `modelId` (e.g. "acme:gpt4"): the
    /// address of `hanzo-kms keys show poai:acme:gpt4`, one per key version in use.
    function setModelSigner(string calldata modelId, address signer, bool authorised) external onlyOwner {
        if (signer == address(0)) revert ZeroSigner();
        bytes32 h = keccak256(bytes(modelId));
        _modelSigners[h][signer] = authorised;
        emit ModelSignerSet(h, signer, authorised, modelId);
    }

    /// Authorise (or withdraw) `signer` for attestations from the node `nodeId`, whatever the model.
    function setNodeSigner(string calldata nodeId, address signer, bool authorised) external onlyOwner {
        if (signer == address(0)) revert ZeroSigner();
        bytes32 h = keccak256(bytes(nodeId));
        _nodeSigners[h][signer] = authorised;
        emit NodeSignerSet(h, signer, authorised, nodeId);
    }

    /// Whether `signer` is authorised for `modelId`.
    function isModelSigner(string calldata modelId, address signer) external view returns (bool) {
        return _modelSigners[keccak256(bytes(modelId))][signer];
    }

    /// Whether `signer` is authorised for `nodeId`.
    function isNodeSigner(string calldata nodeId, address signer) external view returns (bool) {
        return _nodeSigners[keccak256(bytes(nodeId))][signer];
    }

    // ---- helpers ----

    function _checkInclusion(bytes32 digest, bytes32 root, uint64 count, uint64 index, ProofStep[] calldata proof)
        private
        pure
    {
        if (proof.length > MAX_PROOF_STEPS) revert ProofTooLong(proof.length);
        bytes32 computed = HanzoHash.merkleRoot(digest, proof);
        if (computed != root) revert MerkleRootMismatch(computed, root);
        if (index >= count) revert BatchIndexOutOfRange(index, count);
    }

    function _checkSigner(bytes32 modelHash, bytes32 nodeHash, address signer) private view {
        if (_modelSigners[modelHash][signer]) return;
        if (_nodeSigners[nodeHash][signer]) return;
        revert SignerNotAuthorised(signer);
    }

    function _checkWindow(uint64 timestamp) private view {
        // uint256 arithmetic: no uint64 overflow near the end of time.
        if (uint256(timestamp) + attestationTtl < block.timestamp) {
            revert AttestationExpired(timestamp, block.timestamp);
        }
        if (timestamp > block.timestamp + MAX_FUTURE_SECS) revert AttestationNotYetValid(timestamp, block.timestamp);
    }

    function _record(bytes32 digest, Attestation calldata attestation, address signer) private {
        if (_recorded[digest]) return;
        _recorded[digest] = true;
        emit AttestationRecorded(digest, HanzoHash.str(attestation.modelId), signer);
    }
}
