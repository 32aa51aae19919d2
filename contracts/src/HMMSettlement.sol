// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Attestation, BatchProof, HanzoHash, Settlement} from "./HanzoTypes.sol";
import {PoAIVerifier} from "./PoAIVerifier.sol";

/// @title Settles HMM compute-marketplace settlements signed by Hanzo KMS.
/// @notice A settlement is accepted when its signature recovers to a settlement signer the owner
/// registered, it is not expired (`block.timestamp ≤ expiry`) nor more than 60 s in the future,
/// its `attestationDigest` is a valid attestation (verified in the same call, alone or as a batch
/// item, or recorded earlier with recordAttestation / recordBatchItem), that attestation was never
/// settled, and the signer never used its nonce. The last two are kept in storage, so they hold
/// across transactions and blocks. Each accepted settlement emits `Settled`. This contract moves
/// no funds: a payment contract builds on `settle*` and the event.
/// @dev HMMSettlement is a PoAIVerifier: one address, one owner, one signer registry and one
/// EIP-712 domain for attestations and settlements, as hanzo-kms has one domain for both (with a
/// `verifyingContract`, it names this contract). Verifying the attestation is an internal call,
/// not a call to another contract. Deploy PoAIVerifier alone where nothing is settled.
contract HMMSettlement is PoAIVerifier {
    mapping(address signer => bool) private _settlementSigners;
    mapping(bytes32 attestationDigest => bytes32 settlementDigest) private _settledBy;
    mapping(address signer => mapping(bytes32 nonce => bool)) private _nonceUsed;

    /// The signer is not a registered settlement signer. Also what an edited field or a foreign
    /// domain gives: the signature then recovers to another address.
    error SettlementSignerNotAuthorised(address signer);
    /// `block.timestamp` is past the settlement's `expiry`.
    error SettlementExpired(uint64 expiry, uint256 blockTimestamp);
    /// The settlement's `timestamp` is more than 60 s after `block.timestamp`.
    error SettlementNotYetValid(uint64 timestamp, uint256 blockTimestamp);
    /// `settle` was called for an attestation that was not recorded.
    error AttestationNotRecorded(bytes32 attestationDigest);
    /// The attestation passed along is not the one the settlement names.
    error AttestationDigestMismatch(bytes32 attestationDigest, bytes32 given);
    /// The attestation was already settled, by the settlement with digest `settlementDigest`.
    error AlreadySettled(bytes32 attestationDigest, bytes32 settlementDigest);
    /// The signer already used this nonce.
    error NonceAlreadyUsed(address signer, bytes32 nonce);

    /// A settlement was accepted. Indexers follow `attestationDigest`, `provider` or `consumer`.
    event Settled(
        bytes32 indexed attestationDigest,
        address indexed provider,
        address indexed consumer,
        bytes32 settlementDigest,
        uint256 amount,
        string jobId,
        bytes32 nonce,
        address signer
    );
    /// The owner registered (or withdrew) a settlement signer.
    event SettlementSignerSet(address indexed signer, bool authorised);

    /// @param owner_ who manages the signers (Ownable2Step: a transfer must be accepted).
    /// @param bindToContract true: the domain names this contract as `verifyingContract`; false:
    /// the domain has none (hanzo-kms's default). See PoAIVerifier.
    /// @param attestationTtl_ seconds an attestation stays valid (3600 in hanzo-kms's default).
    constructor(address owner_, bool bindToContract, uint64 attestationTtl_)
        PoAIVerifier(owner_, bindToContract, attestationTtl_)
    {}

    /// Settle a settlement whose attestation was recorded earlier (recordAttestation or
    /// recordBatchItem). Returns the settlement's digest.
    function settle(Settlement calldata settlement, bytes calldata signature) external returns (bytes32) {
        if (!isRecorded(settlement.attestationDigest)) {
            revert AttestationNotRecorded(settlement.attestationDigest);
        }
        return _settle(settlement, signature);
    }

    /// Settle a settlement and verify its attestation in the same call.
    function settleWithAttestation(
        Settlement calldata settlement,
        bytes calldata signature,
        Attestation calldata attestation,
        bytes calldata attestationSignature
    ) external returns (bytes32) {
        (bytes32 d,) = verify(attestation, attestationSignature);
        if (d != settlement.attestationDigest) revert AttestationDigestMismatch(settlement.attestationDigest, d);
        return _settle(settlement, signature);
    }

    /// Settle a settlement and verify its attestation as a batch item in the same call.
    function settleWithBatchItem(
        Settlement calldata settlement,
        bytes calldata signature,
        Attestation calldata attestation,
        BatchProof calldata batch
    ) external returns (bytes32) {
        (bytes32 d,) = verifyBatchProof(attestation, batch);
        if (d != settlement.attestationDigest) revert AttestationDigestMismatch(settlement.attestationDigest, d);
        return _settle(settlement, signature);
    }

    /// Checks a signed settlement without its attestation and without the storage rules; returns
    /// its digest and signer.
    function verifySettlement(Settlement calldata settlement, bytes calldata signature)
        public
        view
        returns (bytes32 digest, address signer)
    {
        digest = _digest(HanzoHash.settlement(settlement));
        signer = _recover(digest, signature);
        if (!_settlementSigners[signer]) revert SettlementSignerNotAuthorised(signer);
        if (settlement.expiry < block.timestamp) revert SettlementExpired(settlement.expiry, block.timestamp);
        if (settlement.timestamp > block.timestamp + MAX_FUTURE_SECS) {
            revert SettlementNotYetValid(settlement.timestamp, block.timestamp);
        }
    }

    /// The settlement digest that settled `attestationDigest`, or zero.
    function settledBy(bytes32 attestationDigest) external view returns (bytes32) {
        return _settledBy[attestationDigest];
    }

    /// Whether `signer` used `nonce` in an accepted settlement.
    function nonceUsed(address signer, bytes32 nonce) external view returns (bool) {
        return _nonceUsed[signer][nonce];
    }

    /// The EIP-712 digest of a settlement, as hanzo-kms prints it in `digest`.
    function settlementDigest(Settlement calldata settlement) external view returns (bytes32) {
        return _digest(HanzoHash.settlement(settlement));
    }

    /// Register (or withdraw) a settlement signer: the address of `hanzo-kms keys show
    /// hmm:CUSTOMER:MODEL`, one per key version in use.
    function setSettlementSigner(address signer, bool authorised) external onlyOwner {
        if (signer == address(0)) revert ZeroSigner();
        _settlementSigners[signer] = authorised;
        emit SettlementSignerSet(signer, authorised);
    }

    /// Whether `signer` is a registered settlement signer.
    function isSettlementSigner(address signer) external view returns (bool) {
        return _settlementSigners[signer];
    }

    function _settle(Settlement calldata settlement, bytes calldata signature) private returns (bytes32 digest) {
        address signer;
        (digest, signer) = verifySettlement(settlement, signature);
        bytes32 a = settlement.attestationDigest;
        bytes32 previous = _settledBy[a];
        if (previous != bytes32(0)) revert AlreadySettled(a, previous);
        if (_nonceUsed[signer][settlement.nonce]) revert NonceAlreadyUsed(signer, settlement.nonce);
        _settledBy[a] = digest;
        _nonceUsed[signer][settlement.nonce] = true;
        emit Settled(
            a,
            settlement.provider,
            settlement.consumer,
            digest,
            settlement.amount,
            settlement.jobId,
            settlement.nonce,
            signer
        );
    }
}
