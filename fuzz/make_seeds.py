#!/usr/bin/env python3
"""Write the seed inputs of the fuzz targets to fuzz/corpus/<target>/seed-* (committed; the
fuzzer's own finds in the same directories are not). Run from anywhere: python3 fuzz/make_seeds.py"""
import hashlib
import json
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


H = lambda b: "0x" + bytes([b]) .hex() * 32
ATT = {"model_id": "zen-1", "input_hash": H(1), "output_hash": H(2), "timestamp": 1700000000,
       "compute_time_ms": 42, "node_id": "node-7", "nonce": H(3)}
SETTLEMENT = {"job_id": "job-1", "provider": "0x" + "11" * 20, "consumer": "0x" + "22" * 20,
              "amount": "1000", "attestation_digest": H(4), "timestamp": 1700000000,
              "expiry": 1700086400, "nonce": H(5)}
SIGNED_ATT = {"attestation": ATT, "digest": H(6), "signature": "0x" + "ab" * 65,
              "signer": "0x" + "33" * 20, "algorithm": "secp256k1", "key": "poai:acme:node",
              "version": 1}
ITEM = {"batch": {"root": H(7), "count": 2, "timestamp": 1700000000}, "batch_digest": H(8),
        "signature": "0x" + "cd" * 65, "signer": "0x" + "33" * 20, "algorithm": "secp256k1",
        "key": "poai:acme:node", "version": 1, "attestation": ATT, "digest": H(9), "index": 1,
        "proof": [{"hash": H(10), "left": True}]}
SIGNED_SETTLEMENT = {"settlement": SETTLEMENT, "digest": H(11), "signature": "0x" + "ef" * 65,
                     "signer": "0x" + "44" * 20, "algorithm": "secp256k1",
                     "key": "hmm:acme:market", "version": 2}

# ---- config: YAML, then NUL and override lines -------------------------------------------------
hip005 = open(os.path.join(REPO, "crates/core/tests/fixtures/hip005.yaml")).read()
write("config", "hip005", hip005)
write("config", "hip005-env", hip005 + "\0KMS__LUX__PROVIDER=software\n"
      "KMS__HANZO__POAI_SIGNING__ATTESTATION_TTL=7200\nSTORAGE__URL=sqlite:/tmp/x.db\n")
write("config", "softhsm", """kms:
  lux:
    provider: softhsm2
    softhsm2:
      module: /usr/lib/softhsm/libsofthsm2.so
      token_label: hanzo
      pin: "1234"
      wrapping: ecdh-p256
      wrapped_key_cache: 30s
    failover:
      enabled: true
      backup_provider: softhsm2
      health_check_interval: 5s
storage:
  url: postgres://kms:secret@db:5432/kms?sslmode=require
server:
  listen: 127.0.0.1:8443
""")
write("config", "empty-env", "\0STORAGE__MAX_CONNECTIONS=5\nKMS__HANZO__KEY_ISOLATION__NAMESPACE_SEPARATOR=/\n")

# ---- rest_body: route index byte, then the body ---------------------------------------------------
routes = ["/v1/tokens", "/v1/keys/{name}/encrypt", "/v1/keys/{name}/decrypt",
          "/v1/keys/{name}/datakey", "/v1/models/{name}/datakey", "/v1/models/{name}/unwrap",
          "/v1/keys", "/v1/keys/{name}/rotate", "/v1/keyspaces", "/v1/keys/{name}/sign",
          "/v1/keys/{name}/verify", "/v1/poai/sign", "/v1/poai/verify", "/v1/poai/sign-batch",
          "/v1/poai/verify-item", "/v1/hmm/sign", "/v1/hmm/verify"]
bodies = [
    {"tenant": "acme", "roles": ["encrypt", "decrypt"], "patterns": ["data:acme:*"], "description": "ci"},
    {"plaintext": "aGVsbG8gd29ybGQ=", "aad": "Y3R4"},
    {"ciphertext": "hkms:v1:AAECAwQFBgcICQoLDA0ODxAREhM", "aad": ""},
    {"aad": "Y3R4"},
    {"metadata": "e30=", "segment_size": 65536},
    {"header": "SEtNUw=="},
    {"name": "data:acme:invoices", "algorithm": "aes-256-gcm", "rotation_days": 30},
    {},
    {"customer": "acme", "model": "zen-1", "signing_keys": True},
    {"messages": ["aGk=", "aG8="], "prehashed": False},
    {"items": [{"message": "aGk=", "signature": "0x" + "ab" * 65}]},
    {"key": "poai:acme:node", "attestation": ATT},
    SIGNED_ATT,
    {"key": "poai:acme:node", "attestations": [ATT, dict(ATT, nonce=H(12))]},
    ITEM,
    {"key": "hmm:acme:market", "settlement": SETTLEMENT, "attestation": SIGNED_ATT},
    {"signed": SIGNED_SETTLEMENT, "attestation": SIGNED_ATT},
]
for i, (r, b) in enumerate(zip(routes, bodies)):
    write("rest_body", f"{i:02}" + r.replace("/", "_").replace("{name}", "n"),
          bytes([i]) + json.dumps(b).encode())


# ---- grpc: message kind byte, then its protobuf encoding -----------------------------------------
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(no, v):
    if isinstance(v, bool):
        return varint(no << 3) + varint(int(v))
    if isinstance(v, int):
        return varint(no << 3) + varint(v)
    if isinstance(v, str):
        v = v.encode()
    return varint(no << 3 | 2) + varint(len(v)) + v


def msg(fields):
    return b"".join(field(n, v) for n, v in fields)


att_pb = msg([(1, ATT["model_id"]), (2, ATT["input_hash"]), (3, ATT["output_hash"]),
              (4, ATT["timestamp"]), (5, ATT["compute_time_ms"]), (6, ATT["node_id"]),
              (7, ATT["nonce"])])
settlement_pb = msg([(1, "job-1"), (2, SETTLEMENT["provider"]), (3, SETTLEMENT["consumer"]),
                     (4, "1000"), (5, SETTLEMENT["attestation_digest"]), (6, 1700000000),
                     (7, 1700086400), (8, SETTLEMENT["nonce"])])
signed_att_pb = msg([(1, att_pb), (2, SIGNED_ATT["digest"]), (3, SIGNED_ATT["signature"]),
                     (4, SIGNED_ATT["signer"]), (5, "secp256k1"), (6, "poai:acme:node"), (7, 1)])
item_pb = msg([(1, msg([(1, H(7)), (2, 2), (3, 1700000000)])), (2, H(8)),
               (3, ITEM["signature"]), (4, ITEM["signer"]), (5, "secp256k1"),
               (6, "poai:acme:node"), (7, 1), (8, att_pb), (9, H(9)), (10, 1),
               (11, msg([(1, H(10)), (2, True)]))])
signed_settlement_pb = msg([(1, settlement_pb), (2, H(11)), (3, SIGNED_SETTLEMENT["signature"]),
                            (4, SIGNED_SETTLEMENT["signer"]), (5, "secp256k1"),
                            (6, "hmm:acme:market"), (7, 2)])
write("grpc", "0-sign-poai", bytes([0]) + msg([(1, "poai:acme:node"), (2, att_pb)]))
write("grpc", "1-signed-attestation", bytes([1]) + signed_att_pb)
write("grpc", "2-batch-item", bytes([2]) + item_pb)
write("grpc", "3-sign-poai-batch", bytes([3]) + msg([(1, "poai:acme:node"), (2, att_pb), (2, att_pb)]))
write("grpc", "4-sign-hmm", bytes([4]) + msg([(1, "hmm:acme:market"), (2, settlement_pb),
                                              (3, signed_att_pb)]))
write("grpc", "5-verify-hmm", bytes([5]) + msg([(1, signed_settlement_pb), (2, signed_att_pb)]))
write("grpc", "6-create-token", bytes([6]) + msg([(1, "acme"), (2, "sign"), (2, "verify"),
                                                  (3, "poai:acme:*"), (4, "ci")]))
write("grpc", "7-create-key", bytes([7]) + msg([(1, "data:acme:invoices"), (2, "aes-256-gcm"), (3, 30)]))

# ---- backup: bundle, then NUL-separated share files --------------------------------------------
header = {"format": "hanzo-kms-backup", "version": 1, "bundle_id": "b-0123456789abcdef",
          "created_at": 1700000000, "source_store": "sqlite:/var/lib/kms.db",
          "source_provider": "software", "keys": 1}
pp = dict(header, protection={"kind": "passphrase", "kdf": "argon2id",
                              "salt": "c2FsdHNhbHRzYWx0c2FsdA==", "m_cost_kib": 8, "t_cost": 1,
                              "p_cost": 1})
write("backup", "passphrase", json.dumps(pp).encode() + b"\n" + bytes(range(60)))
sh = dict(header, protection={"kind": "shamir", "shares": 3, "threshold": 2})
shares = [json.dumps({"format": "hanzo-kms-backup-share", "version": 1,
                      "bundle_id": "b-0123456789abcdef", "threshold": 2, "index": i,
                      "share": (bytes([i]) + hashlib.sha256(bytes([i])).digest()).hex()})
          for i in (1, 2)]
write("backup", "shamir", json.dumps(sh).encode() + b"\n" + bytes(range(60)) + b"\0"
      + b"\0".join(s.encode() for s in shares))
write("backup", "newer-version", json.dumps(dict(pp, version=2)).encode() + b"\n")

# ---- tokens ----------------------------------------------------------------------------------
write("tokens", "bearer", "Bearer hkms_0123456789abcdef_q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8")
write("tokens", "token", "hkms_fedcba9876543210_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
write("tokens", "ciphertext", "hkms:v3:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")

# ---- pkcs11_handle -----------------------------------------------------------------------------
pt = bytes([0x04]) + bytes(range(1, 65))
write("pkcs11_handle", "resident", bytes([0x11]) + bytes(range(16)) + pt)
write("pkcs11_handle", "resident-aes", bytes([0x11]) + bytes(range(16)))
write("pkcs11_handle", "aes-gcm", bytes([0x12]) + bytes(range(16)) + bytes(12) + bytes(48))
write("pkcs11_handle", "ecdh", bytes([0x13]) + bytes(range(16)) + pt + bytes(12) + bytes(48))
write("pkcs11_handle", "rsa-sha1", bytes([0x15]) + bytes(range(16)) + bytes(256) + bytes(60))
primary = bytes([0x12]) + bytes(range(16)) + bytes(60)
write("pkcs11_handle", "composite", b"FO\x01" + struct.pack(">I", len(primary)) + primary
      + bytes([0x11]) + bytes(range(16)) + pt)
write("pkcs11_handle", "ec-point-der", bytes([0x04, 65]) + pt)
write("pkcs11_handle", "ec-point-ed25519", bytes([0x04, 32]) + bytes(range(32)))


# ---- audit_record: rows of 0x1F-separated fields, separated by 0x1E ------------------------------
def canonical(seq, e):
    s = lambda v: struct.pack(">I", len(v.encode())) + v.encode()
    opt = lambda v: b"\0" if v is None else b"\1" + s(v)
    out = b"hanzo-kms/audit/v1" + struct.pack(">Q", seq) + struct.pack(">q", e["time_ms"])
    out += s(e["request_id"]) + s(e["principal"]) + s(e["tenant"]) + s(e["operation"])
    out += opt(e["key_name"])
    out += b"\0" if e["key_version"] is None else b"\1" + struct.pack(">Q", e["key_version"])
    out += s(e["outcome"]) + opt(e["reason"]) + opt(e["peer"])
    return out


events = [
    dict(time_ms=1700000000000, request_id="r-1", principal="token:0123456789abcdef",
         tenant="acme", operation="encrypt", key_name="data:acme:x", key_version=1,
         outcome="ok", reason=None, peer="10.0.0.1:5000"),
    dict(time_ms=1700000000500, request_id="r-2", principal="anonymous", tenant="-",
         operation="authenticate", key_name=None, key_version=None, outcome="denied",
         reason="unauthenticated", peer=None),
]
rows, prev = [], bytes(32)
for seq, e in enumerate(events, 1):
    h = hashlib.sha256(prev + canonical(seq, e)).digest()
    f = [str(seq), str(e["time_ms"]), e["request_id"], e["principal"], e["tenant"],
         e["operation"], e["key_name"] or "-",
         "-" if e["key_version"] is None else str(e["key_version"]), e["outcome"],
         e["reason"] or "-", e["peer"] or "-", "-", h.hex()]
    rows.append("\x1f".join(f))
    prev = h
write("audit_record", "chain", "\x1e".join(rows))
write("audit_record", "one", rows[0])
# (The detail column, schema 7, is "-": absent, so these records hash as before it existed. No
# previous hash since schema 8: a row follows the row before it.)

# ---- audit_archive: fuzz/corpus/audit_archive/seed-archive is not made here: it is a real
# archive written by `hanzo-kms audit export` (its checkpoint's P-256 signature needs more than
# Python's standard library). Remake it with: hanzo-kms --data-dir D init; hanzo-kms --data-dir D
# audit checkpoint; hanzo-kms --data-dir D audit export --out fuzz/corpus/audit_archive/seed-archive

# ---- aws_credentials: a selector byte (0 config file, 1 credentials file, 2 STS answer with
# status 200 (0x82: 400), 3 credential_process output / command), then the input ---------------
write("aws_credentials", "config", b"\0" + b"""# comment
[default]
region = eu-west-1
[profile app]
role_arn = arn:aws:iam::123456789012:role/app
source_profile = base
s3 =
  max_concurrent_requests = 20
[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
sso_region = us-east-1
[services local]
kms =
  endpoint_url = http://127.0.0.1:4566
""")
write("aws_credentials", "credentials", b"\1[base]\naws_access_key_id = AKIAEXAMPLE\n"
      b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
write("aws_credentials", "sts-ok", b"\2" + b"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>s&amp;ecret</SecretAccessKey><SessionToken>token&#x2F;x</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>""")
write("aws_credentials", "sts-error", b"\x82" + b"""<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>No OpenIDConnect provider found</Message></Error></ErrorResponse>""")
write("aws_credentials", "process", b"\3" + json.dumps({"Version": 1, "AccessKeyId": "AKIA", "SecretAccessKey": "s", "SessionToken": "t", "Expiration": "2030-01-01T00:00:00Z"}).encode())
write("aws_credentials", "command", b"\3" + b"""/usr/bin/get-creds --name 'a b' "c \\"d\\"" e\\ f""")
