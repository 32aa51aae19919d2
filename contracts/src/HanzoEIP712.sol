// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {IERC5267} from "@openzeppelin/contracts/interfaces/IERC5267.sol";

/// The signature is not 65 bytes (`r ‖ s ‖ v`).
error SignatureLengthInvalid(uint256 length);
/// `v` is not 27 or 28 (a 0/1 recovery id must be sent as 27/28).
error SignatureVInvalid(uint8 v);
/// `s` is in the upper half of the curve order: the high-S twin of a signature, refused as
/// hanzo-kms refuses it.
error SignatureSInvalid(bytes32 s);
/// `ecrecover` found no key for this signature (`r` is not a point's x, or `s` is zero).
error SignatureInvalid();

/// @title The EIP-712 domain of Hanzo KMS, and its secp256k1 signatures.
/// @notice The domain is docs/signing.md's: name "Hanzo KMS", version "1", chainId, and
/// `verifyingContract` only when the deployment asks for it (hanzo-kms's
/// `kms.hanzo.eip712.verifying_contract`). OpenZeppelin's EIP712 always includes
/// `verifyingContract = address(this)`, so it cannot express the first form; this contract
/// builds the separator itself, and uses OpenZeppelin's ECDSA and MessageHashUtils for the rest.
/// chainId is `block.chainid`: hanzo-kms's `kms.hanzo.eip712.chain_id` must equal the chain's id.
abstract contract HanzoEIP712 is IERC5267 {
    bytes32 private constant DOMAIN_TYPEHASH = keccak256("EIP712Domain(string name,string version,uint256 chainId)");
    bytes32 private constant DOMAIN_WITH_CONTRACT_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Hanzo KMS");
    bytes32 private constant VERSION_HASH = keccak256("1");

    /// The domain's `verifyingContract`, or `address(0)` when the domain has none.
    address public immutable domainContract;
    bytes32 private immutable _cachedSeparator;
    uint256 private immutable _cachedChainId;

    /// @param verifyingContract_ the domain's `verifyingContract`, or `address(0)` for the
    /// domain without one.
    constructor(address verifyingContract_) {
        domainContract = verifyingContract_;
        _cachedChainId = block.chainid;
        _cachedSeparator = _buildSeparator(verifyingContract_);
    }

    /// The EIP-712 domain separator of the current chain.
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedSeparator : _buildSeparator(domainContract);
    }

    /// EIP-5267: the domain's fields (0x07: name, version, chainId; 0x0f: and verifyingContract).
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        fields = domainContract == address(0) ? bytes1(0x07) : bytes1(0x0f);
        return (fields, "Hanzo KMS", "1", block.chainid, domainContract, bytes32(0), new uint256[](0));
    }

    /// keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash).
    function _digest(bytes32 structHash) internal view returns (bytes32) {
        return MessageHashUtils.toTypedDataHash(domainSeparator(), structHash);
    }

    /// The address whose key made `signature` over `digest`: 65 bytes `r ‖ s ‖ v`, low-S, `v` 27 or
    /// 28, or a revert naming what is wrong.
    function _recover(bytes32 digest, bytes calldata signature) internal pure returns (address) {
        if (signature.length != 65) revert SignatureLengthInvalid(signature.length);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 0x20))
            v := byte(0, calldataload(add(signature.offset, 0x40)))
        }
        if (v != 27 && v != 28) revert SignatureVInvalid(v);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, v, r, s);
        if (err == ECDSA.RecoverError.InvalidSignatureS) revert SignatureSInvalid(s);
        if (err != ECDSA.RecoverError.NoError) revert SignatureInvalid();
        return signer;
    }

    function _buildSeparator(address verifyingContract_) private view returns (bytes32) {
        if (verifyingContract_ == address(0)) {
            return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid));
        }
        return keccak256(
            abi.encode(DOMAIN_WITH_CONTRACT_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, verifyingContract_)
        );
    }
}
