"""The HIP-005 client API over the real server."""

from __future__ import annotations

import time

import pytest

import hanzo_kms


def test_keyspace_and_keys(admin):
    keys = admin.create_model_keyspace("initech", "llama")
    names = sorted(k["name"] for k in keys)
    assert names == ["hmm:initech:llama", "model:initech:llama", "poai:initech:llama"]
    with pytest.raises(hanzo_kms.AlreadyExists) as e:
        admin.create_model_keyspace("initech", "llama")
    assert e.value.code == "already_exists" and e.value.status == 409 and e.value.request_id
    info = admin.get_key("poai:initech:llama")
    assert info["name"] == "poai:initech:llama" and info["versions"][0]["address"].startswith("0x")
    assert "model:initech:llama" in [k["name"] for k in admin.list_keys("model:initech")]
    rotated = admin.rotate_key("model:initech:llama")
    assert len(rotated["versions"]) == 2


def test_errors_carry_code_and_request_id(admin, server):
    with pytest.raises(hanzo_kms.NotFound) as e:
        admin.get_key("data:acme:missing")
    err = e.value
    assert err.code == "not_found" and err.status == 404
    assert err.request_id and err.request_id in str(err)
    assert isinstance(err, LookupError) and isinstance(err, hanzo_kms.KmsError)
    with pytest.raises(hanzo_kms.InvalidArgument):
        admin.create_key("nonsense")
    with pytest.raises(hanzo_kms.Unauthenticated):
        hanzo_kms.Client(server.rest).list_keys()


def test_encrypt_decrypt_and_data_keys(admin):
    admin.create_key("data:acme:users")
    ct = admin.encrypt("data:acme:users", b"user record", aad=b"tenant=acme")
    assert ct["ciphertext"].startswith("hkms:v1:") and ct["version"] == 1
    assert admin.decrypt("data:acme:users", ct["ciphertext"], aad=b"tenant=acme") == b"user record"
    with pytest.raises(hanzo_kms.AuthenticationFailed):
        admin.decrypt("data:acme:users", ct["ciphertext"], aad=b"tenant=other")
    dk = admin.generate_data_key("data:acme:users")
    assert len(dk["plaintext"]) == 32 and dk["ciphertext"].startswith("hkms:")
    assert admin.unwrap_data_key("data:acme:users", dk["ciphertext"]) == dk["plaintext"]


def test_model_weights_in_memory_match_cli(admin, server, tmp_path):
    weights = bytes(range(256)) * 5000
    sealed = admin.encrypt_model_weights("acme:gpt4", weights, metadata=b"{}")
    assert sealed[:6] == b"HZKMSW"
    assert bytes(admin.decrypt_model_weights("acme:gpt4", sealed)) == weights
    enc, out = tmp_path / "w.hkms", tmp_path / "w.bin"
    enc.write_bytes(sealed)
    server.cli("model", "decrypt", "--model", "acme:gpt4", "--in", str(enc), "--out", str(out))
    assert out.read_bytes() == weights
    plain, enc2 = tmp_path / "p.bin", tmp_path / "p.hkms"
    plain.write_bytes(weights[:1000])
    server.cli("model", "encrypt", "--model", "acme:gpt4", "--in", str(plain), "--out", str(enc2))
    assert bytes(admin.decrypt_model_weights("acme:gpt4", enc2)) == weights[:1000]
    with pytest.raises(hanzo_kms.AuthenticationFailed):
        admin.decrypt_model_weights("acme:other", sealed)


def test_poai_and_hmm(admin):
    now = int(time.time())
    att = {"model_id": "acme:gpt4", "input_hash": "0x" + "11" * 32, "output_hash": "0x" + "22" * 32,
           "timestamp": now, "compute_time_ms": 7, "node_id": "n1"}
    signed = admin.sign_poai("poai:acme:gpt4", att)
    assert signed["attestation"]["nonce"].startswith("0x") and len(signed["attestation"]["nonce"]) == 66
    assert signed["signer"].lower() == admin.get_key("poai:acme:gpt4")["versions"][0]["address"].lower()
    assert admin.verify_poai(signed)["valid"] is True
    forged = dict(signed, attestation=dict(signed["attestation"], compute_time_ms=8))
    v = admin.verify_poai(forged)
    assert v["valid"] is False and v["reason"]
    settlement = {"job_id": "j1", "provider": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                  "consumer": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
                  "amount": "12345678901234567890123", "attestation_digest": signed["digest"],
                  "timestamp": now}
    settled = admin.sign_hmm_settlement("hmm:acme:gpt4", settlement, signed)
    assert settled["settlement"]["amount"] == "12345678901234567890123"
    assert admin.verify_hmm_settlement(settled, signed)["valid"] is True
    with pytest.raises(hanzo_kms.Replayed):
        admin.sign_hmm_settlement("hmm:acme:gpt4", dict(settlement, job_id="j2"), signed)
    items = admin.sign_poai_batch("poai:acme:gpt4", [att, dict(att, node_id="n2")])
    assert len(items) == 2 and admin.verify_poai_batch_item(items[1])["valid"] is True


def test_tokens(admin, server):
    t = admin.create_token("acme", ["sign"], ["poai:acme:*"], description="fleet")
    assert t["token"].startswith("hkms_")
    assert t["id"] in [x["id"] for x in admin.list_tokens()]
    signer = hanzo_kms.Client(server.rest, t["token"])
    with pytest.raises(hanzo_kms.PermissionDenied):
        signer.encrypt("data:acme:users", b"x")
    revoked = admin.revoke_token(t["id"])
    assert revoked["id"] == t["id"]
    with pytest.raises(hanzo_kms.Unauthenticated):
        signer.list_keys()


def test_token_file_and_env(server, tmp_path, monkeypatch):
    tf = tmp_path / "tok"
    tf.write_text(server.admin_token_file.read_text() + "\n")
    assert hanzo_kms.Client(server.rest, token_file=tf).list_keys()
    monkeypatch.setenv("HANZO_KMS_URL", server.rest)
    monkeypatch.setenv("HANZO_KMS_TOKEN_FILE", str(tf))
    assert hanzo_kms.Client().list_keys()
    with pytest.raises(hanzo_kms.IoError, match="token file"):
        hanzo_kms.Client(server.rest, token_file=tmp_path / "missing")
    with pytest.raises(hanzo_kms.InvalidArgument):
        hanzo_kms.Client("ftp://x")
    with pytest.raises(hanzo_kms.InvalidArgument, match="https"):
        hanzo_kms.Client(server.rest, "t", tls_ca=tf)


def test_nonce_orders_by_time():
    a = hanzo_kms.time_ordered_nonce()
    b = hanzo_kms.time_ordered_nonce()
    assert len(a) == 66 and a[:34] <= b[:34] and a != b
