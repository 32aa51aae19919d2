#!/usr/bin/env python3
"""Check Hanzo KMS's EIP-712 digests and signatures with an independent implementation (eth-account).

1. Recompute the worked vectors of docs/signing.md with eth_account.messages.encode_typed_data and
   compare every digest and domain separator; recover the signer from each signature.
2. For each signed JSON file given on the command line (output of `hanzo-kms poai sign` or
   `hanzo-kms hmm sign`), recompute the digest from the message, compare it, and recover the signer:
   it must equal the file's `signer` and, if given with --address, the address `keys show` printed.
Exits 1 on any mismatch.
"""
import json
import re
import sys

from eth_account import Account
from eth_account.messages import encode_typed_data, _hash_eip191_message
from eth_utils import keccak

DOMAIN_FIELDS = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                 {"name": "chainId", "type": "uint256"}]
TYPES = {
    "PoAIAttestation": [
        {"name": "modelId", "type": "string"}, {"name": "inputHash", "type": "bytes32"},
        {"name": "outputHash", "type": "bytes32"}, {"name": "timestamp", "type": "uint64"},
        {"name": "computeTimeMs", "type": "uint64"}, {"name": "nodeId", "type": "string"},
        {"name": "nonce", "type": "bytes32"}],
    "HMMSettlement": [
        {"name": "jobId", "type": "string"}, {"name": "provider", "type": "address"},
        {"name": "consumer", "type": "address"}, {"name": "amount", "type": "uint256"},
        {"name": "attestationDigest", "type": "bytes32"}, {"name": "timestamp", "type": "uint64"},
        {"name": "expiry", "type": "uint64"}, {"name": "nonce", "type": "bytes32"}],
    "PoAIBatch": [
        {"name": "root", "type": "bytes32"}, {"name": "count", "type": "uint64"},
        {"name": "timestamp", "type": "uint64"}],
}
failures = []


def check(label, got, want):
    if got.lower() != want.lower():
        failures.append(f"{label}: eth-account gives {got}, Hanzo KMS gives {want}")


def digest(primary, message, chain_id=96369, contract=None):
    domain = {"name": "Hanzo KMS", "version": "1", "chainId": chain_id}
    fields = list(DOMAIN_FIELDS)
    if contract:
        domain["verifyingContract"] = contract
        fields.append({"name": "verifyingContract", "type": "address"})
    typed = {"types": {"EIP712Domain": fields, primary: TYPES[primary]}, "primaryType": primary,
             "domain": domain, "message": message}
    signable = encode_typed_data(full_message=typed)
    return "0x" + _hash_eip191_message(signable).hex().removeprefix("0x"), "0x" + bytes(signable.header).hex()


def recover(d, sig):
    return Account._recover_hash(bytes.fromhex(d[2:]), signature=bytes.fromhex(sig[2:]))


def attestation_message(a):
    return {"modelId": a["model_id"], "inputHash": a["input_hash"], "outputHash": a["output_hash"],
            "timestamp": a["timestamp"], "computeTimeMs": a["compute_time_ms"], "nodeId": a["node_id"],
            "nonce": a["nonce"]}


def settlement_message(s):
    return {"jobId": s["job_id"], "provider": s["provider"], "consumer": s["consumer"], "amount": int(s["amount"]),
            "attestationDigest": s["attestation_digest"], "timestamp": s["timestamp"], "expiry": s["expiry"],
            "nonce": s["nonce"]}


def vectors(doc_path):
    text = open(doc_path).read()
    values = {}
    for block in text.split("```text vector\n")[1:]:
        for line in block.split("```")[0].splitlines():
            if " = " in line:
                k, v = line.split(" = ", 1)
                values[k.strip()] = v.strip()
    att = {"model_id": "acme:gpt4", "input_hash": "0x" + "11" * 32, "output_hash": "0x" + "22" * 32,
           "timestamp": 1795000000, "compute_time_ms": 1500, "node_id": "node-1", "nonce": "0x" + "33" * 32}
    d_att, sep = digest("PoAIAttestation", attestation_message(att))
    check("domain_separator", sep, values["domain_separator"])
    check("attestation_digest", d_att, values["attestation_digest"])
    check("attestation signer", recover(d_att, values["attestation_signature"]), values["signer"])
    s = {"job_id": "job-42", "provider": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
         "consumer": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", "amount": "1000000000000000000",
         "attestation_digest": d_att, "timestamp": 1795000100, "expiry": 1795086500, "nonce": "0x" + "44" * 32}
    d_set, _ = digest("HMMSettlement", settlement_message(s))
    check("settlement_digest", d_set, values["settlement_digest"])
    check("settlement signer", recover(d_set, values["settlement_signature"]), values["signer"])
    second = dict(att, node_id="node-2", nonce="0x" + "55" * 32)
    d2, _ = digest("PoAIAttestation", attestation_message(second))
    check("second_attestation_digest", d2, values["second_attestation_digest"])
    leaf = lambda d: keccak(b"\x00" + bytes.fromhex(d[2:]))
    root = "0x" + keccak(b"\x01" + leaf(d_att) + leaf(d2)).hex()
    check("batch_root", root, values["batch_root"])
    check("batch_proof_0", "0x" + leaf(d2).hex(), values["batch_proof_0"])
    d_batch, _ = digest("PoAIBatch", {"root": root, "count": 2, "timestamp": 1795000200})
    check("batch_digest", d_batch, values["batch_digest"])
    check("batch signer", recover(d_batch, values["batch_signature"]), values["signer"])
    _, sep_c = digest("PoAIBatch", {"root": root, "count": 2, "timestamp": 1},
                      contract="0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC")
    check("domain_separator_with_contract", sep_c, values["domain_separator_with_contract"])
    return len(values)


def signed_file(path, address):
    doc = json.load(open(path))
    if "attestation" in doc:
        d, _ = digest("PoAIAttestation", attestation_message(doc["attestation"]))
    else:
        d, _ = digest("HMMSettlement", settlement_message(doc["settlement"]))
    check(f"{path} digest", d, doc["digest"])
    who = recover(d, doc["signature"])
    check(f"{path} recovered signer", who, doc["signer"])
    if address:
        check(f"{path} keys show address", who, address)


def main():
    args = sys.argv[1:]
    address = None
    if "--address" in args:
        i = args.index("--address")
        address = args[i + 1]
        del args[i:i + 2]
    import os
    n = vectors(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "signing.md"))
    for p in args:
        signed_file(p, address)
    if failures:
        print("eip712 interop: FAILED\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"eip712 interop: {n} vector values and {len(args)} signed files agree with eth-account")


if __name__ == "__main__":
    main()
