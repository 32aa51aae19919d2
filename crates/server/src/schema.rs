//! JSON Schemas of the REST request bodies, for `/v1/openapi.json`.
//!
//! Written by hand beside the request types (which all refuse unknown fields). A test in
//! `lib.rs` keeps the two in step: it parses each route's example with the route's own type,
//! and for every object in the example it checks that each listed property is known, that
//! dropping a required one is refused and dropping an optional one is not, and that an unlisted
//! one is refused.

use serde_json::{Value, json};

/// An object with exactly these properties, of which `required` must be present.
fn object(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

/// `schema` with exactly one of `alternatives` required.
fn one_of(mut schema: Value, alternatives: &[&str]) -> Value {
    schema["oneOf"] = alternatives
        .iter()
        .map(|a| json!({"required": [a]}))
        .collect();
    schema
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn u64_schema(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "description": description})
}

fn u32_schema(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": description})
}

fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

fn array_of(items: Value, description: &str) -> Value {
    json!({"type": "array", "items": items, "description": description})
}

/// The shared schemas (`components.schemas`).
pub(crate) fn components() -> Value {
    let mut all = request_components();
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), answer_components()) {
        all.extend(more);
    }
    all
}

fn request_components() -> Value {
    json!({
        "Hex32": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$",
            "description": "32 bytes as 0x and 64 hex digits"},
        "HexBytes": {"type": "string", "pattern": "^0x([0-9a-fA-F]{2})*$",
            "description": "bytes as 0x and hex digits"},
        "Address": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$",
            "description": "an Ethereum address: all lowercase, all uppercase, or EIP-55 mixed case"},
        "Uint256": {"type": "string", "pattern": "^[0-9]{1,78}$",
            "description": "a decimal integer below 2^256"},
        "Base64": {"type": "string", "contentEncoding": "base64",
            "description": "bytes in standard base64 with padding"},
        "PoAIAttestation": object(
            &["model_id", "input_hash", "output_hash", "timestamp", "compute_time_ms", "node_id"],
            json!({
                "model_id": string("the model, e.g. acme:gpt4"),
                "input_hash": reference("Hex32"),
                "output_hash": reference("Hex32"),
                "timestamp": u64_schema("Unix seconds; valid from 60 s before to the attestation TTL after"),
                "compute_time_ms": u64_schema("milliseconds of compute"),
                "node_id": string("the inference node"),
                "nonce": {"allOf": [reference("Hex32")],
                    "description": "filled with 32 random bytes when absent; a key never signs two messages with one nonce"},
            }),
        ),
        "SignedPoAIAttestation": object(
            &["model_id", "input_hash", "output_hash", "timestamp", "compute_time_ms", "node_id",
              "nonce"],
            json!({
                "model_id": string("the model, e.g. acme:gpt4"),
                "input_hash": reference("Hex32"),
                "output_hash": reference("Hex32"),
                "timestamp": u64_schema("Unix seconds"),
                "compute_time_ms": u64_schema("milliseconds of compute"),
                "node_id": string("the inference node"),
                "nonce": {"allOf": [reference("Hex32")], "description": "the nonce it was signed with"},
            }),
        ),
        "SignedHMMSettlement": object(
            &["job_id", "provider", "consumer", "amount", "attestation_digest", "timestamp",
              "nonce"],
            json!({
                "job_id": string("the compute job"),
                "provider": reference("Address"),
                "consumer": reference("Address"),
                "amount": reference("Uint256"),
                "attestation_digest": reference("Hex32"),
                "timestamp": u64_schema("Unix seconds"),
                "expiry": u64_schema("Unix seconds, as signed"),
                "nonce": {"allOf": [reference("Hex32")], "description": "the nonce it was signed with"},
            }),
        ),
        "HMMSettlement": object(
            &["job_id", "provider", "consumer", "amount", "attestation_digest", "timestamp"],
            json!({
                "job_id": string("the compute job"),
                "provider": reference("Address"),
                "consumer": reference("Address"),
                "amount": reference("Uint256"),
                "attestation_digest": reference("Hex32"),
                "timestamp": u64_schema("Unix seconds"),
                "expiry": u64_schema("Unix seconds; 0 or absent: timestamp + the configured settlement expiry"),
                "nonce": {"allOf": [reference("Hex32")], "description": "filled with 32 random bytes when absent"},
            }),
        ),
        "PqSignature": object(
            &["key", "version", "algorithm", "signature", "signer"],
            json!({
                "key": string("the ML-DSA-65 partner key"),
                "version": u32_schema("its version"),
                "algorithm": string("ml-dsa-65"),
                "signature": reference("HexBytes"),
                "signer": string("keccak-256 of its public key, 0x-hex (the key itself: GET /v1/keys/{name}/public)"),
            }),
        ),
        "SignedAttestation": object(
            &["attestation", "digest", "signature", "signer", "algorithm", "key", "version"],
            json!({
                "attestation": reference("SignedPoAIAttestation"),
                "digest": reference("Hex32"),
                "signature": reference("HexBytes"),
                "signer": string("the signing address (secp256k1), else keccak-256 of the public key"),
                "algorithm": string("the key's algorithm"),
                "key": string("the signing key"),
                "version": u32_schema("the key version that signed"),
                "pq": {"allOf": [reference("PqSignature")],
                    "description": "the ML-DSA-65 half of a hybrid signature: present, and required, when the key has a partner"},
            }),
        ),
        "SignedSettlement": object(
            &["settlement", "digest", "signature", "signer", "algorithm", "key", "version"],
            json!({
                "settlement": reference("SignedHMMSettlement"),
                "digest": reference("Hex32"),
                "signature": reference("HexBytes"),
                "signer": string("the signing address"),
                "algorithm": string("the key's algorithm"),
                "key": string("the signing key"),
                "version": u32_schema("the key version that signed"),
            }),
        ),
        "PoAIBatch": object(
            &["root", "count", "timestamp"],
            json!({
                "root": reference("Hex32"),
                "count": u64_schema("attestations under the root"),
                "timestamp": u64_schema("Unix seconds"),
            }),
        ),
        "ProofStep": object(
            &["hash", "left"],
            json!({
                "hash": reference("Hex32"),
                "left": boolean("whether the sibling is on the left"),
            }),
        ),
        "BatchItem": object(
            &["batch", "batch_digest", "signature", "signer", "algorithm", "key", "version",
              "attestation", "digest", "index", "proof"],
            json!({
                "batch": reference("PoAIBatch"),
                "batch_digest": reference("Hex32"),
                "signature": reference("HexBytes"),
                "signer": string("the signing address"),
                "algorithm": string("the key's algorithm"),
                "key": string("the signing key"),
                "version": u32_schema("the key version that signed"),
                "attestation": reference("SignedPoAIAttestation"),
                "digest": reference("Hex32"),
                "index": u64_schema("the attestation's place in the batch"),
                "proof": array_of(reference("ProofStep"), "the Merkle path to the root"),
                "pq": {"allOf": [reference("PqSignature")],
                    "description": "the ML-DSA-65 half over the batch digest: present, and required, when the key has a partner"},
            }),
        ),
    })
}

fn nullable(kind: &str, description: &str) -> Value {
    json!({"type": [kind, "null"], "description": description})
}

fn i64_schema(description: &str) -> Value {
    json!({"type": "integer", "description": description})
}

/// The shared schemas of the answers (added to [`components`]).
fn answer_components() -> Value {
    json!({
        "KeyVersion": object(
            &["version", "state", "created_at"],
            json!({
                "version": u32_schema("the version"),
                "state": string("enabled, disabled, or destroyed"),
                "created_at": i64_schema("Unix seconds"),
                "public_key": string("hex; asymmetric keys only"),
                "address": string("the Ethereum address; secp256k1 keys only"),
            }),
        ),
        "KeyInfo": object(
            &["name", "purpose", "customer", "algorithm", "origin", "provider", "state",
              "primary_version", "rotation_period_days", "created_at", "rotated_at", "destroy_at",
              "rotation_due", "versions"],
            json!({
                "name": string("purpose:customer:name"),
                "purpose": string("model, poai, hmm, data or api"),
                "customer": string("the tenant"),
                "algorithm": string("e.g. aes-256-gcm, secp256k1"),
                "origin": string("software, hsm or cloud: where the material was made"),
                "provider": string("the provider holding it"),
                "state": string("enabled, disabled, or destroy_scheduled"),
                "primary_version": u32_schema("the version new operations use"),
                "rotation_period_days": nullable("integer", "automatic rotation period"),
                "created_at": i64_schema("Unix seconds"),
                "rotated_at": i64_schema("Unix seconds"),
                "destroy_at": nullable("integer", "Unix seconds, when a destruction is scheduled"),
                "rotation_due": boolean("the rotation period has passed"),
                "versions": array_of(reference("KeyVersion"), "every version, oldest first"),
            }),
        ),
        "Verdict": object(
            &["valid", "reason"],
            json!({
                "valid": boolean("the signature verifies and the object is within its validity"),
                "reason": nullable("string", "why not, e.g. bad_signature, expired, unknown_key"),
            }),
        ),
        "RawSignature": object(
            &["key", "version", "algorithm", "signature", "signer"],
            json!({
                "key": string("the api: key"),
                "version": u32_schema("the version that signed"),
                "algorithm": string("the key's algorithm"),
                "signature": reference("HexBytes"),
                "signer": string("the address (secp256k1), else keccak-256 of the public key (the key itself: GET /v1/keys/{name}/public)"),
            }),
        ),
        "RawVerdict": object(
            &["valid", "version"],
            json!({
                "valid": boolean("the signature verifies under a version of the key"),
                "version": nullable("integer", "the version that verified it"),
            }),
        ),
        "AuditRecord": object(
            &["seq", "time_ms", "request_id", "principal", "tenant", "operation", "key", "version",
              "outcome", "reason", "peer", "detail", "prev_hash", "hash"],
            json!({
                "seq": u64_schema("position in the chain, from 1"),
                "time_ms": i64_schema("Unix milliseconds"),
                "request_id": string("the request's id, as its answer carried it"),
                "principal": string("who asked: token:<id>, local:operator, or unauthenticated"),
                "tenant": string("the principal's tenant, * for all"),
                "operation": string("e.g. poai.sign"),
                "key": nullable("string", "the key named"),
                "version": nullable("integer", "the key version used"),
                "outcome": {"type": "string", "enum": ["ok", "denied", "error", "invalid"],
                    "description": "ok, denied, error, or invalid (a verification whose verdict was not valid)"},
                "reason": nullable("string", "why, for a refusal"),
                "peer": nullable("string", "the client's address"),
                "detail": nullable("string",
                    "JSON text the hash covers, on audit.checkpoint, audit.export and audit.prune \
                     records (docs/audit-archive.md)"),
                "prev_hash": string("SHA-256 of the record before, hex"),
                "hash": string("SHA-256(prev_hash ‖ canonical record), hex"),
            }),
        ),
        "TokenInfo": object(
            &["id", "tenant", "roles", "patterns", "description", "created_at", "created_by",
              "revoked_at"],
            json!({
                "id": string("the token's id (not the token)"),
                "tenant": string("the tenant it acts for, * for all"),
                "roles": array_of(json!({"type": "string"}), "what it may do"),
                "patterns": array_of(json!({"type": "string"}), "key-name patterns it is limited to"),
                "description": string("the note given at creation"),
                "created_at": i64_schema("Unix seconds"),
                "created_by": string("the principal that made it"),
                "revoked_at": nullable("integer", "Unix seconds"),
                "expires_at": i64_schema("Unix seconds from which it is refused; absent: until revoked"),
            }),
        ),
    })
}

/// The JSON Schema of a route's answer (200), if it answers JSON.
pub(crate) fn answer(method: &str, path: &str) -> Option<Value> {
    let data_key = object(
        &["key", "version", "plaintext", "ciphertext"],
        json!({
            "key": string("the key that wrapped it"),
            "version": u32_schema("its version"),
            "plaintext": {"allOf": [reference("Base64")], "description": "the data key: use it, then forget it"},
            "ciphertext": string("the wrapped data key, hkms:v<version>:…; store it"),
        }),
    );
    let model_key = object(
        &["key", "version", "header", "data_key"],
        json!({
            "key": string("the model key"),
            "version": u32_schema("its version"),
            "header": {"allOf": [reference("Base64")], "description": "the model file's header"},
            "data_key": {"allOf": [reference("Base64")], "description": "the file's data key"},
        }),
    );
    Some(match (method, path) {
        ("POST", "/v1/keys") | ("GET", "/v1/keys/{name}") | ("POST", "/v1/keys/{name}/rotate") => {
            reference("KeyInfo")
        }
        ("GET", "/v1/keys") | ("POST", "/v1/keyspaces") => {
            array_of(reference("KeyInfo"), "the keys")
        }
        ("POST", "/v1/keys/{name}/encrypt") => object(
            &["key", "version", "ciphertext"],
            json!({
                "key": string("the key"),
                "version": u32_schema("the version that encrypted"),
                "ciphertext": string("hkms:v<version>:<base64url>"),
            }),
        ),
        ("POST", "/v1/keys/{name}/decrypt") | ("POST", "/v1/keys/{name}/unwrap") => {
            object(&["plaintext"], json!({"plaintext": reference("Base64")}))
        }
        ("POST", "/v1/keys/{name}/datakey") => data_key,
        ("POST", "/v1/keys/{name}/sign") => json!({"oneOf": [
            reference("RawSignature"),
            object(&["signatures"], json!({"signatures": array_of(reference("RawSignature"), "one per message, in order")})),
        ]}),
        ("POST", "/v1/keys/{name}/verify") => json!({"oneOf": [
            reference("RawVerdict"),
            object(&["verdicts"], json!({"verdicts": array_of(reference("RawVerdict"), "one per item, in order")})),
        ]}),
        ("GET", "/v1/keys/{name}/public") => object(
            &["key", "version", "algorithm", "public_key"],
            json!({
                "key": string("the key"),
                "version": u32_schema("the primary version"),
                "algorithm": string("the key's algorithm"),
                "public_key": string("hex"),
                "address": string("the Ethereum address; secp256k1 keys only"),
            }),
        ),
        ("POST", "/v1/models/{name}/datakey") | ("POST", "/v1/models/{name}/unwrap") => model_key,
        ("POST", "/v1/poai/sign") => reference("SignedAttestation"),
        ("POST", "/v1/poai/sign-batch") => {
            array_of(reference("BatchItem"), "one per attestation, in order")
        }
        ("POST", "/v1/poai/verify")
        | ("POST", "/v1/poai/verify-item")
        | ("POST", "/v1/hmm/verify") => reference("Verdict"),
        ("POST", "/v1/hmm/sign") => reference("SignedSettlement"),
        ("GET", "/v1/audit") => array_of(reference("AuditRecord"), "oldest first"),
        ("GET", "/v1/audit/verify") => object(
            &["valid", "from", "records", "head", "problem"],
            json!({
                "valid": boolean("no record was edited, deleted or reordered, every checkpoint's \
                    signature verifies, and an export covers every pruned record"),
                "from": u64_schema("the first record checked: 1, or the oldest the store holds \
                    after a prune"),
                "records": u64_schema("records checked"),
                "head": string("the hash of the last record checked, hex"),
                "problem": {"type": ["object", "null"], "additionalProperties": false,
                    "required": ["seq", "reason"],
                    "properties": {"seq": u64_schema("the first bad record"), "reason": string("what is wrong")}},
            }),
        ),
        ("POST", "/v1/tokens") => {
            let mut created = answer_components()["TokenInfo"].clone();
            if let Some(required) = created["required"].as_array_mut() {
                required.push(json!("token"));
            }
            created["properties"]["token"] =
                string("the token itself, shown only in this answer: keep it secret");
            created
        }
        ("GET", "/v1/tokens") => array_of(reference("TokenInfo"), "the tokens the caller may see"),
        ("GET", "/v1/openapi.json") => json!({"type": "object", "description": "this document"}),
        ("DELETE", "/v1/tokens/{id}") => reference("TokenInfo"),
        // (Also its 503 answer, with `ready: false`.)
        ("GET", "/readyz") => object(
            &["ready"],
            json!({
                "ready": boolean("the store and the provider answer"),
                "store": {"type": "string", "enum": ["ok", "down", "audit_failing"], "description": "when not ready: down (unreachable), audit_failing (it answers reads, but audit records cannot be written: a full disk)"},
                "provider": {"type": "string", "enum": ["ok", "down"], "description": "when not ready"},
            }),
        ),
        _ => return None,
    })
}

/// The JSON Schema of a route's request body, and an example of it; `None` for a route without
/// a body.
pub(crate) fn request_body(method: &str, path: &str) -> Option<(Value, Value)> {
    if method != "POST" {
        return None;
    }
    let h32 = format!("0x{}", "11".repeat(32));
    let sig = format!("0x{}", "ab".repeat(65));
    let attestation = json!({
        "model_id": "acme:gpt4", "input_hash": h32, "output_hash": h32, "timestamp": 1_767_225_600,
        "compute_time_ms": 1500, "node_id": "node-7", "nonce": h32,
    });
    let signed_attestation = json!({
        "attestation": attestation, "digest": h32, "signature": sig,
        "signer": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "algorithm": "secp256k1",
        "key": "poai:acme:gpt4", "version": 1,
        "pq": {"key": "poai:acme:gpt4-pq", "version": 1, "algorithm": "ml-dsa-65",
            "signature": "0xabcd", "signer": "0x0102"},
    });
    let settlement = json!({
        "job_id": "job-42", "provider": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "consumer": "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359", "amount": "1000000000000000000",
        "attestation_digest": h32, "timestamp": 1_767_225_600, "expiry": 1_767_229_200, "nonce": h32,
    });
    let aad = || string("additional authenticated data, base64; the same must be given to decrypt");
    Some(match path {
        "/v1/keys" => (
            object(
                &["name"],
                json!({
                    "name": string("purpose:customer:name, e.g. data:acme:db or poai:acme:gpt4"),
                    "algorithm": string("e.g. aes-256-gcm, secp256k1, ml-dsa-65; by default the purpose's"),
                    "rotation_days": u32_schema("rotate automatically after this many days"),
                }),
            ),
            json!({"name": "data:acme:db", "algorithm": "aes-256-gcm", "rotation_days": 90}),
        ),
        "/v1/keys/{name}/rotate" => (object(&[], json!({})), json!({})),
        "/v1/keys/{name}/encrypt" => (
            object(
                &["plaintext"],
                json!({"plaintext": reference("Base64"), "aad": aad()}),
            ),
            json!({"plaintext": "aGVsbG8=", "aad": "dGFibGU6dXNlcnM="}),
        ),
        "/v1/keys/{name}/decrypt" | "/v1/keys/{name}/unwrap" => (
            object(
                &["ciphertext"],
                json!({
                    "ciphertext": string("hkms:v<version>:<base64>, as encrypt or datakey returned it"),
                    "aad": aad(),
                }),
            ),
            json!({"ciphertext": "hkms:v1:AAAA", "aad": "dGFibGU6dXNlcnM="}),
        ),
        "/v1/keys/{name}/datakey" => (
            object(&[], json!({"aad": aad()})),
            json!({"aad": "dGFibGU6dXNlcnM="}),
        ),
        "/v1/keys/{name}/sign" => (
            object(
                &[],
                json!({
                    "message": {"allOf": [reference("Base64")], "description": "one message (or messages)"},
                    "messages": array_of(reference("Base64"), "several messages, one signature each"),
                    "prehashed": boolean("the messages are already 32-byte digests the key signs as they are: SHA-256 for p256, any 32 bytes (keccak-256 for Ethereum) for secp256k1; refused for ed25519 and ml-dsa-65"),
                }),
            ),
            json!({"message": "aGVsbG8=", "messages": ["aGVsbG8="], "prehashed": false}),
        ),
        "/v1/keys/{name}/verify" => (
            object(
                &[],
                json!({
                    "message": {"allOf": [reference("Base64")], "description": "one message, with signature (or items)"},
                    "signature": string("0x-hex as sign returned it, or base64"),
                    "items": array_of(
                        object(&["message", "signature"], json!({
                            "message": reference("Base64"),
                            "signature": string("0x-hex or base64"),
                        })),
                        "several messages and signatures",
                    ),
                    "prehashed": boolean("the messages are already 32-byte digests the key signs as they are: SHA-256 for p256, any 32 bytes (keccak-256 for Ethereum) for secp256k1; refused for ed25519 and ml-dsa-65"),
                }),
            ),
            json!({"message": "aGVsbG8=", "signature": sig,
                "items": [{"message": "aGVsbG8=", "signature": sig}], "prehashed": false}),
        ),
        "/v1/keyspaces" => (
            object(
                &["customer", "model"],
                json!({
                    "customer": string("the tenant"),
                    "model": string("the model's name"),
                    "signing_keys": boolean("also create its poai: and hmm: signing keys (default true)"),
                }),
            ),
            json!({"customer": "acme", "model": "gpt4", "signing_keys": true}),
        ),
        "/v1/models/{name}/datakey" => (
            object(
                &[],
                json!({
                    "metadata": {"allOf": [reference("Base64")],
                        "description": "user metadata (any bytes) bound into the file header"},
                    "segment_size": u32_schema("plaintext bytes per segment (default 1 MiB)"),
                }),
            ),
            json!({"metadata": "eyJmb3JtYXQiOiJwdCJ9", "segment_size": 1_048_576}),
        ),
        "/v1/models/{name}/unwrap" => (
            object(
                &["header"],
                json!({"header": {"allOf": [reference("Base64")],
                "description": "the model file's header"}}),
            ),
            json!({"header": "SEtNUw=="}),
        ),
        "/v1/poai/sign" => (
            object(
                &["key", "attestation"],
                json!({
                    "key": string("a poai: key"),
                    "attestation": reference("PoAIAttestation"),
                }),
            ),
            json!({"key": "poai:acme:gpt4", "attestation": attestation}),
        ),
        "/v1/poai/verify" => (reference("SignedAttestation"), signed_attestation),
        "/v1/poai/sign-batch" => (
            object(
                &["key", "attestations"],
                json!({
                    "key": string("a poai: key"),
                    "attestations": array_of(reference("PoAIAttestation"), "signed under one Merkle root"),
                }),
            ),
            json!({"key": "poai:acme:gpt4", "attestations": [attestation]}),
        ),
        "/v1/poai/verify-item" => (
            reference("BatchItem"),
            json!({
                "batch": {"root": h32, "count": 2, "timestamp": 1_767_225_600},
                "batch_digest": h32, "signature": sig,
                "signer": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "algorithm": "secp256k1",
                "key": "poai:acme:gpt4", "version": 1, "attestation": attestation, "digest": h32,
                "index": 0, "proof": [{"hash": h32, "left": false}],
                "pq": {"key": "poai:acme:gpt4-pq", "version": 1, "algorithm": "ml-dsa-65",
                    "signature": "0xabcd", "signer": "0x0102"},
            }),
        ),
        "/v1/hmm/sign" => (
            one_of(
                object(
                    &["key", "settlement"],
                    json!({
                        "key": string("an hmm: key"),
                        "settlement": reference("HMMSettlement"),
                        "attestation": {"allOf": [reference("SignedAttestation")],
                            "description": "the signed attestation the settlement pays for (this or attestation_item, exactly one): it must verify under a poai: key of the settling key's tenant; it is consumed"},
                        "attestation_item": {"allOf": [reference("BatchItem")],
                            "description": "the batch item the settlement pays for, instead of attestation"},
                    }),
                ),
                &["attestation", "attestation_item"],
            ),
            json!({"key": "hmm:acme:gpt4", "settlement": settlement, "attestation": signed_attestation}),
        ),
        "/v1/hmm/verify" => (
            object(
                &["signed"],
                json!({
                    "signed": reference("SignedSettlement"),
                    "attestation": {"allOf": [reference("SignedAttestation")],
                        "description": "the attestation, to check the settlement against it"},
                }),
            ),
            json!({
                "signed": {"settlement": settlement, "digest": h32, "signature": sig,
                    "signer": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
                    "algorithm": "secp256k1", "key": "hmm:acme:gpt4", "version": 1},
                "attestation": signed_attestation,
            }),
        ),
        "/v1/tokens" => (
            object(
                &["tenant", "roles"],
                json!({
                    "tenant": string("the tenant the token acts for"),
                    "roles": array_of(
                        json!({"type": "string", "enum": ["admin", "manage", "encrypt", "decrypt", "sign", "verify", "audit"]}),
                        "what the token may do",
                    ),
                    "patterns": array_of(json!({"type": "string"}), "key-name patterns it is limited to, e.g. model:acme:*"),
                    "description": string("a note for token listings"),
                    "ttl_secs": u64_schema("seconds until the token stops working (1 to 10 years); absent: until revoked"),
                }),
            ),
            json!({"tenant": "acme", "roles": ["sign", "verify"], "patterns": ["poai:acme:*"],
                "description": "inference fleet", "ttl_secs": 2_592_000}),
        ),
        _ => return None,
    })
}

/// `schema` with its `$ref` (into `components`) or single `allOf` followed; an undefined
/// reference resolves to `null`.
pub(crate) fn resolve<'a>(schema: &'a Value, components: &'a Value) -> &'a Value {
    let mut s = schema;
    // The document's references do not loop; the bound only keeps a mistake finite.
    for _ in 0..16 {
        if let Some(name) = s["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
            s = &components[name];
        } else if let Some([one]) = s["allOf"].as_array().map(Vec::as_slice) {
            s = one;
        } else {
            break;
        }
    }
    s
}

/// Where `value` has an array in place of an object that `schema` describes, that place as a
/// path (`attestation`, `items[2]`). serde reads a struct from a JSON array (its fields in
/// order); this API's objects are never positional, so such a body is refused. Only the shape
/// is checked here: the request types check the rest.
pub(crate) fn array_for_object(
    schema: &Value,
    value: &Value,
    components: &Value,
) -> Option<String> {
    fn go(
        schema: &Value,
        value: &Value,
        components: &Value,
        at: &str,
        depth: usize,
    ) -> Option<String> {
        let s = resolve(schema, components);
        match (s["type"].as_str(), value) {
            (Some("object"), Value::Array(_)) => Some(at.to_owned()),
            (Some("object"), Value::Object(o)) if depth < 16 => o.iter().find_map(|(k, v)| {
                let p = &s["properties"][k.as_str()];
                let at = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                go(p, v, components, &at, depth + 1)
            }),
            (Some("array"), Value::Array(items)) if depth < 16 => {
                items.iter().enumerate().find_map(|(i, v)| {
                    go(&s["items"], v, components, &format!("{at}[{i}]"), depth + 1)
                })
            }
            _ => None,
        }
    }
    go(schema, value, components, "", 0)
}
