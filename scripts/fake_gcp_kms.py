#!/usr/bin/env python3
"""A FAKE Google Cloud KMS server, for tests only.

No Google Cloud KMS emulator exists in any registry we reach (DESIGN.md §7), so Hanzo KMS's
`google-cloud-kms` provider is tested against this server. It follows the documented REST
mapping of google.cloud.kms.v1 (googleapis: google/cloud/kms/v1/service.proto and
resources.proto, their google.api.http annotations) for the calls the provider makes, and does
real cryptography:

  GET  /v1/projects/P/locations/L/keyRings/R                                  GetKeyRing
  POST /v1/projects/P/locations/L/keyRings/R/cryptoKeys?cryptoKeyId=ID         CreateCryptoKey
  GET  /v1/.../cryptoKeys/K                                                   GetCryptoKey
  GET  /v1/.../cryptoKeys/K/cryptoKeyVersions/N                               GetCryptoKeyVersion
  GET  /v1/.../cryptoKeys/K/cryptoKeyVersions/N/publicKey                     GetPublicKey
  POST /v1/.../cryptoKeys/K:encrypt            (or .../cryptoKeyVersions/N:encrypt)  Encrypt
  POST /v1/.../cryptoKeys/K:decrypt                                           Decrypt
  POST /v1/.../cryptoKeys/K/cryptoKeyVersions/N:asymmetricSign                AsymmetricSign
  POST /v1/.../cryptoKeys/K/cryptoKeyVersions/N:macSign                       MacSign
  POST /v1/.../cryptoKeys/K/cryptoKeyVersions/N:destroy                       DestroyCryptoKeyVersion
  POST /token      OAuth 2.0 JWT bearer grant (RFC 7523), as a service account's token_uri

What it checks:
  - every /v1 call carries `Authorization: Bearer <t>` where t was issued by /token and has not
    expired; /token accepts only grant_type urn:ietf:params:oauth:grant-type:jwt-bearer with an
    RS256 JWT signed by the service-account key this fake generated (its public half is known
    here), iss = the account's client_email, aud = the token_uri, a cloudkms or cloud-platform
    scope, iat/exp at most one hour apart and not expired;
  - resource names (project and location as configured, key ring exists, key and version exist,
    cryptoKeyId matches [a-zA-Z0-9_-]{1,63}), purpose and algorithm of the key for each call,
    EC_SIGN_SECP256K1_SHA256 only at protection level HSM;
  - request JSON: only known fields (camelCase or snake_case), bytes as base64, CRC32C fields
    (plaintextCrc32c, additionalAuthenticatedDataCrc32c, ciphertextCrc32c, digestCrc32c,
    dataCrc32c) against the data; responses carry ciphertextCrc32c / plaintextCrc32c /
    signatureCrc32c / macCrc32c / pemCrc32c and the verified* flags;
  - size limits: plaintext and AAD at most 64 KiB; HSM keys: plaintext + AAD at most 8 KiB;
  - version state: asymmetric versions are PENDING_GENERATION for --pending-ms after creation
    (as the real service generates them asynchronously); destroyed versions are refused.
Errors are Google-style JSON {"error": {"code", "message", "status"}} with the real HTTP codes.

Crypto: AES-256-GCM with the request's AAD (one key per version; the ciphertext names the
version), ECDSA secp256k1 / P-256 over the given SHA-256 digest (DER signature), HMAC-SHA256.

Test hooks (not part of the API, no authentication): POST /__fake/fault with
{"kind": "crc"|"throttle"|"unavailable"|"denied", "method": M, "count": N, "after": K}
(M: create, get, publicKey, encrypt, decrypt, asymmetricSign, macSign, destroy or *) lets K
matching calls pass (default 0), then makes the next N return a wrong response CRC32C, a 429
RESOURCE_EXHAUSTED, a 503 UNAVAILABLE or a 403 PERMISSION_DENIED; {"kind": "clear"} drops
every pending fault. GET /__fake/stats returns call counts per method; GET /__fake/keys
returns every CryptoKey with its purpose and the state of each version.

Start: fake_gcp_kms.py --dir DIR [--port 0] [--project P] [--location L] [--key-ring R]...
Writes DIR/credentials.json (a service-account key file whose token_uri points here) and
DIR/wrong-credentials.json (same account, a key this fake does not know), then prints one JSON
line {"endpoint": ..., "credentials": ..., "port": ...} on stdout when it is serving.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.exceptions import InvalidSignature, InvalidTag

KIB = 1024
MAX_DATA = 64 * KIB
MAX_HSM = 8 * KIB
TOKEN_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPES = ("https://www.googleapis.com/auth/cloudkms", "https://www.googleapis.com/auth/cloud-platform")
KEY_ID = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")

# --- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), written here: the stdlib has none ---
_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ _CRC_TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283
assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of ones

ALGORITHMS = {
    "ENCRYPT_DECRYPT": {"GOOGLE_SYMMETRIC_ENCRYPTION"},
    "ASYMMETRIC_SIGN": {"EC_SIGN_P256_SHA256", "EC_SIGN_SECP256K1_SHA256"},
    "MAC": {"HMAC_SHA256"},
}


class ApiError(Exception):
    def __init__(self, code, status, message):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


def invalid(msg):
    return ApiError(400, "INVALID_ARGUMENT", msg)


def precondition(msg):
    return ApiError(400, "FAILED_PRECONDITION", msg)


def not_found(msg):
    return ApiError(404, "NOT_FOUND", msg)


def b64d(value, field):
    if not isinstance(value, str):
        raise invalid(f'Invalid value at \'{field}\' (TYPE_BYTES), expected base64 string')
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_" if ("-" in value or "_" in value) else None, validate=True)
    except Exception:
        raise invalid(f"Invalid value at '{field}' (TYPE_BYTES), Base64 decoding failed")


def b64e(data):
    return base64.b64encode(data).decode()


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Version:
    def __init__(self, key, number, pending_ms):
        self.key, self.number = key, number
        self.created = time.time()
        self.ready_at = self.created + (pending_ms / 1000.0 if key.purpose == "ASYMMETRIC_SIGN" else 0)
        self.destroyed = False
        alg = key.algorithm
        if alg == "GOOGLE_SYMMETRIC_ENCRYPTION":
            self.secret = AESGCM.generate_key(bit_length=256)
        elif alg == "HMAC_SHA256":
            self.secret = secrets.token_bytes(32)
        elif alg == "EC_SIGN_P256_SHA256":
            self.secret = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EC_SIGN_SECP256K1_SHA256":
            self.secret = ec.generate_private_key(ec.SECP256K1())

    @property
    def name(self):
        return f"{self.key.name}/cryptoKeyVersions/{self.number}"

    def state(self):
        if self.destroyed:
            return "DESTROY_SCHEDULED"
        return "PENDING_GENERATION" if time.time() < self.ready_at else "ENABLED"

    def usable(self):
        st = self.state()
        if st != "ENABLED":
            raise precondition(f"{self.name} is not enabled, current state is: {st}.")
        return self

    def json(self):
        out = {"name": self.name, "state": self.state(), "protectionLevel": self.key.protection,
               "algorithm": self.key.algorithm, "createTime": rfc3339(self.created),
               "generateTime": rfc3339(self.ready_at)}
        if self.destroyed:
            out["destroyTime"] = rfc3339(self.destroyed)
        return out


class Key:
    def __init__(self, name, purpose, algorithm, protection, labels, pending_ms):
        self.name, self.purpose, self.algorithm, self.protection = name, purpose, algorithm, protection
        self.labels = labels
        self.created = time.time()
        self.versions = {1: Version(self, 1, pending_ms)}
        self.primary = 1 if purpose == "ENCRYPT_DECRYPT" else None

    def json(self):
        out = {"name": self.name, "purpose": self.purpose, "createTime": rfc3339(self.created),
               "versionTemplate": {"protectionLevel": self.protection, "algorithm": self.algorithm},
               "destroyScheduledDuration": "86400s"}
        if self.labels:
            out["labels"] = self.labels
        if self.primary is not None:
            out["primary"] = self.versions[self.primary].json()
        return out


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.project, self.location = args.project, args.location
        self.pending_ms = args.pending_ms
        self.token_ttl = args.token_ttl
        self.rings = {f"projects/{args.project}/locations/{args.location}/keyRings/{r}": time.time()
                      for r in args.key_ring}
        self.keys = {}
        self.tokens = {}  # token -> expiry
        self.faults = []  # [kind, method, remaining, calls to let pass first]
        self.stats = {}
        self.sa_key = None
        self.client_email = None
        self.key_id = None
        self.token_uri = None


STATE = None


def parse_name(path):
    """Split /v1/<name>[:verb] into (name, verb); check project and location."""
    rest = path[len("/v1/"):]
    verb = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, verb = rest.rsplit(":", 1)
    parts = rest.split("/")
    if len(parts) < 6 or parts[0] != "projects" or parts[2] != "locations" or parts[4] != "keyRings":
        raise not_found(f"The requested URL {path} was not found on this server.")
    if parts[1] != STATE.project or parts[3] != STATE.location:
        raise ApiError(403, "PERMISSION_DENIED",
                       f"Permission 'cloudkms.keyRings.get' denied on resource '{'/'.join(parts[:6])}' (or it may not exist).")
    return parts, verb


def ring_of(parts):
    ring = "/".join(parts[:6])
    if ring not in STATE.rings:
        raise not_found(f"KeyRing {ring} not found.")
    return ring


def key_of(parts):
    ring_of(parts)
    if len(parts) < 8 or parts[6] != "cryptoKeys":
        raise not_found("The requested resource was not found.")
    name = "/".join(parts[:8])
    key = STATE.keys.get(name)
    if key is None:
        raise not_found(f"CryptoKey {name} not found.")
    return key


def version_of(parts):
    key = key_of(parts)
    if len(parts) != 10 or parts[8] != "cryptoKeyVersions":
        raise invalid("The resource name must name a CryptoKeyVersion.")
    try:
        v = key.versions[int(parts[9])]
    except (ValueError, KeyError):
        raise not_found(f"CryptoKeyVersion {'/'.join(parts)} not found.")
    return key, v


def fields(body, allowed):
    """Take known fields, accepting camelCase or snake_case; refuse anything else."""
    out = {}
    for k, v in body.items():
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k)
        if camel not in allowed:
            raise invalid(f'Invalid JSON payload received. Unknown name "{k}": Cannot find field.')
        out[camel] = v
    return out


def check_crc(body, data_field, crc_field, data):
    if crc_field not in body:
        return False
    try:
        want = int(body[crc_field])
    except (TypeError, ValueError):
        raise invalid(f"Invalid value at '{crc_field}' (TYPE_INT64)")
    if want != crc32c(data):
        raise invalid(f"The checksum in field {crc_field} did not match the data in field {data_field}.")
    return True


def purpose(key, want, method):
    if key.purpose != want:
        raise precondition(f"The request cannot be fulfilled. {key.name} has purpose {key.purpose}; "
                           f"{method} requires {want}.")


def fault(method):
    """The next injected fault for `method`, if any (counted down)."""
    for f in STATE.faults:
        if f[1] in (method, "*") and f[2] > 0:
            if f[3] > 0:
                f[3] -= 1
                return None
            f[2] -= 1
            return f[0]
    return None


CORRUPT = False  # set per request (under STATE.lock) when a "crc" fault applies to it


def corrupt(crc):
    return (crc ^ 1) if CORRUPT else crc


def crc_str(n):
    return str(n)


# --- API methods -------------------------------------------------------------------------------

def create_key(parts, query, body):
    ring = ring_of(parts)
    if len(parts) != 7 or parts[6] != "cryptoKeys":
        raise not_found("The requested resource was not found.")
    key_id = (query.get("cryptoKeyId") or query.get("crypto_key_id") or [None])[0]
    if not key_id:
        raise invalid("crypto_key_id is required.")
    if not KEY_ID.match(key_id):
        raise invalid(f"Invalid crypto_key_id '{key_id}': must match [a-zA-Z0-9_-]{{1,63}}.")
    body = fields(body, {"purpose", "versionTemplate", "labels", "destroyScheduledDuration"})
    purp = body.get("purpose")
    if purp not in ALGORITHMS:
        raise invalid(f"Invalid or unsupported purpose: {purp}.")
    tmpl = fields(body.get("versionTemplate") or {}, {"algorithm", "protectionLevel"})
    alg = tmpl.get("algorithm") or ("GOOGLE_SYMMETRIC_ENCRYPTION" if purp == "ENCRYPT_DECRYPT" else None)
    if alg not in ALGORITHMS[purp]:
        raise invalid(f"Algorithm {alg} is not valid for purpose {purp}.")
    prot = tmpl.get("protectionLevel") or "SOFTWARE"
    if prot not in ("SOFTWARE", "HSM"):
        raise invalid(f"Unsupported protection level {prot}.")
    if alg == "EC_SIGN_SECP256K1_SHA256" and prot != "HSM":
        raise invalid("Algorithm EC_SIGN_SECP256K1_SHA256 is only supported for protection level HSM.")
    name = f"{ring}/cryptoKeys/{key_id}"
    if name in STATE.keys:
        raise ApiError(409, "ALREADY_EXISTS", f"CryptoKey {name} already exists.")
    key = Key(name, purp, alg, prot, body.get("labels"), STATE.pending_ms)
    STATE.keys[name] = key
    return key.json()


def encrypt(parts, body):
    body = fields(body, {"name", "plaintext", "additionalAuthenticatedData", "plaintextCrc32c",
                         "additionalAuthenticatedDataCrc32c"})
    key = key_of(parts)
    purpose(key, "ENCRYPT_DECRYPT", "Encrypt")
    if len(parts) == 10:
        _, v = version_of(parts)
    elif len(parts) == 8:
        v = key.versions[key.primary]
    else:
        raise invalid("The resource name must name a CryptoKey or CryptoKeyVersion.")
    v.usable()
    if "plaintext" not in body:
        raise invalid("plaintext is required.")
    pt = b64d(body["plaintext"], "plaintext")
    aad = b64d(body.get("additionalAuthenticatedData", ""), "additional_authenticated_data")
    if len(pt) > MAX_DATA:
        raise invalid(f"The plaintext is larger than the maximum of {MAX_DATA} bytes.")
    if len(aad) > MAX_DATA:
        raise invalid(f"The additional authenticated data is larger than the maximum of {MAX_DATA} bytes.")
    if key.protection == "HSM" and len(pt) + len(aad) > MAX_HSM:
        raise invalid(f"The combined length of plaintext and additional authenticated data is larger "
                      f"than the maximum of {MAX_HSM} bytes for HSM keys.")
    vp = check_crc(body, "plaintext", "plaintextCrc32c", pt)
    va = check_crc(body, "additional_authenticated_data", "additionalAuthenticatedDataCrc32c", aad)
    nonce = secrets.token_bytes(12)
    header = b"FKMS" + v.number.to_bytes(4, "big")
    ct = header + nonce + AESGCM(v.secret).encrypt(nonce, pt, header + aad)
    return {"name": v.name, "ciphertext": b64e(ct),
            "ciphertextCrc32c": crc_str(corrupt(crc32c(ct))),
            "verifiedPlaintextCrc32c": vp, "verifiedAdditionalAuthenticatedDataCrc32c": va,
            "protectionLevel": key.protection}


def decrypt(parts, body):
    body = fields(body, {"name", "ciphertext", "additionalAuthenticatedData", "ciphertextCrc32c",
                         "additionalAuthenticatedDataCrc32c"})
    key = key_of(parts)
    if len(parts) != 8:
        raise invalid("Decrypt requires the name of a CryptoKey, not a CryptoKeyVersion.")
    purpose(key, "ENCRYPT_DECRYPT", "Decrypt")
    if "ciphertext" not in body:
        raise invalid("ciphertext is required.")
    ct = b64d(body["ciphertext"], "ciphertext")
    aad = b64d(body.get("additionalAuthenticatedData", ""), "additional_authenticated_data")
    if len(ct) > MAX_DATA + 800 or len(aad) > MAX_DATA:
        raise invalid("The ciphertext or additional authenticated data is too large.")
    check_crc(body, "ciphertext", "ciphertextCrc32c", ct)
    check_crc(body, "additional_authenticated_data", "additionalAuthenticatedDataCrc32c", aad)
    bad = invalid("Decryption failed: the ciphertext is invalid.")
    if len(ct) < 8 + 12 + 16 or ct[:4] != b"FKMS":
        raise bad
    v = key.versions.get(int.from_bytes(ct[4:8], "big"))
    if v is None:
        raise bad
    v.usable()
    try:
        pt = AESGCM(v.secret).decrypt(ct[8:20], ct[20:], ct[:8] + aad)
    except InvalidTag:
        raise bad
    return {"plaintext": b64e(pt), "plaintextCrc32c": crc_str(corrupt(crc32c(pt))),
            "usedPrimary": v.number == key.primary, "protectionLevel": key.protection}


def asymmetric_sign(parts, body):
    body = fields(body, {"name", "digest", "digestCrc32c", "data", "dataCrc32c"})
    key, v = version_of(parts)
    purpose(key, "ASYMMETRIC_SIGN", "AsymmetricSign")
    v.usable()
    if "data" in body:
        raise invalid(f"Algorithm {key.algorithm} requires a digest, not data.")
    digest = fields(body.get("digest") or {}, {"sha256", "sha384", "sha512"})
    if set(digest) != {"sha256"}:
        raise invalid(f"Algorithm {key.algorithm} requires a SHA-256 digest.")
    d = b64d(digest["sha256"], "digest.sha256")
    if len(d) != 32:
        raise invalid("The digest must be 32 bytes for a SHA-256 digest.")
    vd = check_crc(body, "digest", "digestCrc32c", d)
    curve_hash = utils.Prehashed(hashes.SHA256())
    sig = v.secret.sign(d, ec.ECDSA(curve_hash))
    return {"signature": b64e(sig), "signatureCrc32c": crc_str(corrupt(crc32c(sig))),
            "verifiedDigestCrc32c": vd, "name": v.name, "protectionLevel": key.protection}


def mac_sign(parts, body):
    body = fields(body, {"name", "data", "dataCrc32c"})
    key, v = version_of(parts)
    purpose(key, "MAC", "MacSign")
    v.usable()
    data = b64d(body.get("data", ""), "data")
    if len(data) > MAX_DATA:
        raise invalid(f"The data is larger than the maximum of {MAX_DATA} bytes.")
    vd = check_crc(body, "data", "dataCrc32c", data)
    mac = hmac.new(v.secret, data, hashlib.sha256).digest()
    return {"name": v.name, "mac": b64e(mac), "macCrc32c": crc_str(corrupt(crc32c(mac))),
            "verifiedDataCrc32c": vd, "protectionLevel": key.protection}


def public_key(parts):
    key, v = version_of(parts[:-1])
    if key.purpose != "ASYMMETRIC_SIGN":
        raise precondition(f"The request cannot be fulfilled. {key.name} has purpose {key.purpose}; "
                           f"GetPublicKey requires an asymmetric key.")
    v.usable()
    pem = v.secret.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"pem": pem, "algorithm": key.algorithm,
            "pemCrc32c": crc_str(corrupt(crc32c(pem.encode()))),
            "name": v.name, "protectionLevel": key.protection}


def destroy(parts, body):
    fields(body, {"name"})
    key, v = version_of(parts)
    if v.destroyed:
        raise precondition(f"{v.name} is not enabled or disabled, current state is: DESTROY_SCHEDULED.")
    v.destroyed = time.time() + 86400
    v.secret = None
    return v.json()


# --- OAuth token endpoint -------------------------------------------------------------------------

def issue_token(form):
    def bad(desc):
        return ApiError(400, "invalid_grant", desc)
    if form.get("grant_type", [None])[0] != TOKEN_GRANT:
        raise ApiError(400, "unsupported_grant_type", "Invalid grant_type.")
    assertion = form.get("assertion", [""])[0]
    pieces = assertion.split(".")
    if len(pieces) != 3:
        raise bad("Invalid JWT: malformed assertion.")
    try:
        header = json.loads(b64url_decode(pieces[0]))
        claims = json.loads(b64url_decode(pieces[1]))
        sig = b64url_decode(pieces[2])
    except Exception:
        raise bad("Invalid JWT: malformed assertion.")
    if header.get("alg") != "RS256":
        raise bad("Invalid JWT: alg must be RS256.")
    try:
        STATE.sa_key.verify(sig, f"{pieces[0]}.{pieces[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise bad("Invalid JWT Signature.")
    now = time.time()
    if claims.get("iss") != STATE.client_email:
        raise ApiError(401, "invalid_client", "The OAuth client was not found.")
    if claims.get("aud") != STATE.token_uri:
        raise bad("Invalid JWT: aud must be the token_uri.")
    scopes = str(claims.get("scope", "")).split()
    if not any(s in SCOPES for s in scopes):
        raise ApiError(400, "invalid_scope", "Missing a Cloud KMS scope.")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp <= iat:
        raise bad("Invalid JWT: iat and exp must be integers at most one hour apart.")
    if exp < now or iat > now + 300:
        raise bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
    token = "ya29.fake-" + secrets.token_urlsafe(32)
    STATE.tokens[token] = now + STATE.token_ttl
    STATE.stats["token"] = STATE.stats.get("token", 0) + 1
    return {"access_token": token, "expires_in": STATE.token_ttl, "token_type": "Bearer"}


def authenticate(headers):
    auth = headers.get("Authorization", "")
    token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
    exp = STATE.tokens.get(token) if token else None
    if exp is None or exp < time.time():
        raise ApiError(401, "UNAUTHENTICATED",
                       "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                       "login cookie or other valid authentication credential.")


# --- HTTP ------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if os.environ.get("FAKE_GCP_KMS_LOG"):
            sys.stderr.write("fake-gcp-kms: " + (fmt % args) + "\n")

    def send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1024 * KIB:
            raise ApiError(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit.")
        return self.rfile.read(n) if n else b""

    def handle_api(self, method):
        global CORRUPT
        CORRUPT = False
        url = urllib.parse.urlsplit(self.path)
        raw = self.read_body()
        if url.path == "/token":
            if method != "POST":
                raise ApiError(405, "invalid_request", "POST required.")
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("application/x-www-form-urlencoded"):
                raise ApiError(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded.")
            return issue_token(urllib.parse.parse_qs(raw.decode()))
        if url.path == "/__fake/fault" and method == "POST":
            f = json.loads(raw)
            if f["kind"] == "clear":
                STATE.faults.clear()
                return {}
            STATE.faults.append([f["kind"], f.get("method", "*"), int(f.get("count", 1)),
                                 int(f.get("after", 0))])
            return {}
        if url.path == "/__fake/keys":
            return {name: {"purpose": k.purpose,
                           "versions": {str(n): v.state() for n, v in k.versions.items()}}
                    for name, k in STATE.keys.items()}
        if url.path == "/__fake/stats":
            return dict(STATE.stats)
        if not url.path.startswith("/v1/"):
            raise not_found(f"The requested URL {url.path} was not found on this server.")
        authenticate(self.headers)
        parts, verb = parse_name(url.path)
        body = {}
        if method == "POST":
            if raw:
                if not self.headers.get("Content-Type", "").startswith("application/json"):
                    raise invalid("Content-Type must be application/json.")
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise invalid("Invalid JSON payload received.")
                if not isinstance(body, dict):
                    raise invalid("Invalid JSON payload received. Expected an object.")
        op = verb or ("publicKey" if parts[-1] == "publicKey" else "create" if method == "POST" else "get")
        STATE.stats[op] = STATE.stats.get(op, 0) + 1
        kind = fault(op)
        if kind == "throttle":
            raise ApiError(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Cryptographic requests'.")
        if kind == "unavailable":
            raise ApiError(503, "UNAVAILABLE", "The service is currently unavailable.")
        if kind == "denied":
            raise ApiError(403, "PERMISSION_DENIED",
                           f"Permission 'cloudkms.cryptoKeys.{op}' denied on resource (or it may not exist).")
        CORRUPT = kind == "crc"
        if method == "GET" and verb is None:
            if parts[-1] == "publicKey" and len(parts) == 11:
                return public_key(parts)
            if len(parts) == 6:
                ring = ring_of(parts)
                return {"name": ring, "createTime": rfc3339(STATE.rings[ring])}
            if len(parts) == 8:
                return key_of(parts).json()
            if len(parts) == 10:
                return version_of(parts)[1].json()
        if method == "POST":
            if verb is None and len(parts) == 7:
                return create_key(parts, urllib.parse.parse_qs(url.query), body)
            handler = {"encrypt": encrypt, "decrypt": decrypt, "asymmetricSign": asymmetric_sign,
                       "macSign": mac_sign, "destroy": destroy}.get(verb)
            if handler is not None:
                return handler(parts, body)
        raise not_found(f"The requested URL {url.path} was not found on this server.")

    def dispatch(self, method):
        try:
            with STATE.lock:
                out = self.handle_api(method)
            self.send_json(200, out)
        except ApiError as e:
            if self.path.startswith("/token"):
                self.send_json(e.code, {"error": e.status, "error_description": e.message})
            else:
                self.send_json(e.code, {"error": {"code": e.code, "message": e.message, "status": e.status}})

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")


def write_credentials(path, key, key_id, email, project, token_uri):
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    doc = {"type": "service_account", "project_id": project, "private_key_id": key_id,
           "private_key": pem, "client_email": email, "client_id": "100000000000000000001",
           "auth_uri": token_uri.rsplit("/", 1)[0] + "/auth", "token_uri": token_uri}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)


def main():
    global STATE
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--project", default="hanzo-ai-prod")
    p.add_argument("--location", default="global")
    p.add_argument("--key-ring", action="append", default=None)
    p.add_argument("--pending-ms", type=int, default=150)
    p.add_argument("--token-ttl", type=int, default=3599)
    args = p.parse_args()
    args.key_ring = args.key_ring or ["hanzo-kms-keyring"]
    STATE = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    endpoint = f"http://127.0.0.1:{port}"
    STATE.token_uri = endpoint + "/token"
    STATE.client_email = f"hanzo-kms@{args.project}.iam.gserviceaccount.com"
    STATE.key_id = secrets.token_hex(20)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    STATE.sa_key = sa.public_key()
    os.makedirs(args.dir, exist_ok=True)
    creds = os.path.join(args.dir, "credentials.json")
    write_credentials(creds, sa, STATE.key_id, STATE.client_email, args.project, STATE.token_uri)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_credentials(os.path.join(args.dir, "wrong-credentials.json"), other, secrets.token_hex(20),
                      STATE.client_email, args.project, STATE.token_uri)
    # A test process may end without stopping us (a shared fake in a static): exit with it.
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    print(json.dumps({"endpoint": endpoint, "credentials": creds, "port": port}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
