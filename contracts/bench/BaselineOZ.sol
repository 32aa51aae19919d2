// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// The gas reference of docs/benchmarks.md: the same checks as PoAIVerifier and HMMSettlement,
// written plainly with OpenZeppelin's EIP712 (domain with verifyingContract = this contract) and
// ECDSA.recover, abi.encode and abi.encodePacked, with the same event. Not for deployment: no
// owner, one settlement signer set. Its domain names the baseline contract, so hanzo-kms signs for it with
// `kms.hanzo.eip712.verifying_contract` set to its address.

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Attestation, ProofStep, Settlement} from "../src/HanzoTypes.sol";

contract BaselineOZ is EIP712 {
    bytes32 constant ATTESTATION_TYPEHASH = keccak256(
        "PoAIAttestation(string modelId,bytes32 inputHash,bytes32 outputHash,uint64 timestamp,uint64 computeTimeMs,string nodeId,bytes32 nonce)"
    );
    bytes32 constant SETTLEMENT_TYPEHASH = keccak256(
        "HMMSettlement(string jobId,address provider,address consumer,uint256 amount,bytes32 attestationDigest,uint64 timestamp,uint64 expiry,bytes32 nonce)"
    );
    bytes32 constant BATCH_TYPEHASH = keccak256("PoAIBatch(bytes32 root,uint64 count,uint64 timestamp)");

    uint64 public immutable ttl;
    mapping(bytes32 => mapping(address => bool)) public modelSigners;
    mapping(bytes32 => mapping(address => bool)) public nodeSigners;
    mapping(address => bool) public settlementSigners;
    mapping(bytes32 => bytes32) public settledBy;
    mapping(address => mapping(bytes32 => bool)) public nonceUsed;

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

    constructor(uint64 ttl_) EIP712("Hanzo KMS", "1") {
        ttl = ttl_;
    }

    function setModelSigner(string calldata modelId, address signer) external {
        modelSigners[keccak256(bytes(modelId))][signer] = true;
    }

    function setSettlementSigner(address signer) external {
        settlementSigners[signer] = true;
    }

    function hashAttestation(Attestation calldata a) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ATTESTATION_TYPEHASH,
                    keccak256(bytes(a.modelId)),
                    a.inputHash,
                    a.outputHash,
                    a.timestamp,
                    a.computeTimeMs,
                    keccak256(bytes(a.nodeId)),
                    a.nonce
                )
            )
        );
    }

    function verify(Attestation calldata a, bytes calldata signature) public view returns (bytes32 digest, address signer) {
        digest = hashAttestation(a);
        signer = ECDSA.recover(digest, signature);
        check(a, signer);
    }

    function verifyBatchItem(
        Attestation calldata a,
        bytes32 root,
        uint64 count,
        uint64 batchTimestamp,
        bytes calldata batchSignature,
        uint64 index,
        ProofStep[] calldata proof
    ) public view returns (bytes32 digest, address signer) {
        digest = hashAttestation(a);
        bytes32 node = keccak256(abi.encodePacked(bytes1(0x00), digest));
        for (uint256 i = 0; i < proof.length; i++) {
            node = proof[i].left
                ? keccak256(abi.encodePacked(bytes1(0x01), proof[i].sibling, node))
                : keccak256(abi.encodePacked(bytes1(0x01), node, proof[i].sibling));
        }
        require(node == root, "bad proof");
        require(index < count, "bad index");
        bytes32 batchDigest = _hashTypedDataV4(keccak256(abi.encode(BATCH_TYPEHASH, root, count, batchTimestamp)));
        signer = ECDSA.recover(batchDigest, batchSignature);
        check(a, signer);
    }

    function settleWithAttestation(
        Settlement calldata s,
        bytes calldata signature,
        Attestation calldata a,
        bytes calldata attestationSignature
    ) external returns (bytes32 digest) {
        (bytes32 d,) = verify(a, attestationSignature);
        require(d == s.attestationDigest, "wrong attestation");
        digest = hashSettlement(s);
        address signer = ECDSA.recover(digest, signature);
        settleChecked(s, digest, signer);
    }

    function settleChecked(Settlement calldata s, bytes32 digest, address signer) internal {
        require(settlementSigners[signer], "not a settlement signer");
        require(block.timestamp <= s.expiry, "expired");
        require(s.timestamp <= block.timestamp + 60, "not yet valid");
        require(settledBy[s.attestationDigest] == bytes32(0), "settled");
        require(!nonceUsed[signer][s.nonce], "nonce used");
        settledBy[s.attestationDigest] = digest;
        nonceUsed[signer][s.nonce] = true;
        emit Settled(s.attestationDigest, s.provider, s.consumer, digest, s.amount, s.jobId, s.nonce, signer);
    }

    function hashSettlement(Settlement calldata s) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    SETTLEMENT_TYPEHASH,
                    keccak256(bytes(s.jobId)),
                    s.provider,
                    s.consumer,
                    s.amount,
                    s.attestationDigest,
                    s.timestamp,
                    s.expiry,
                    s.nonce
                )
            )
        );
    }

    function check(Attestation calldata a, address signer) internal view {
        require(
            modelSigners[keccak256(bytes(a.modelId))][signer] || nodeSigners[keccak256(bytes(a.nodeId))][signer],
            "not authorised"
        );
        require(a.timestamp + ttl >= block.timestamp, "expired");
        require(a.timestamp <= block.timestamp + 60, "not yet valid");
    }
}
