"""Refusals surface as exceptions with the server's code and request id, and release no tensor."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import hanzo_kms
from hanzo_kms.safetensors import load_file, safe_open

SEG = 4096


@pytest.fixture(scope="module")
def model_file(server, tmp_path_factory) -> tuple[Path, Path, dict]:
    d = tmp_path_factory.mktemp("refusals")
    tensors = {"a": np.arange(4096, dtype=np.float32), "b": np.arange(4096, dtype=np.int32) * 3,
               "c": np.ones((64, 64), np.float64)}
    plain, enc = d / "m.safetensors", d / "m.hkms"
    safetensors.numpy.save_file(tensors, str(plain))
    server.cli("model", "encrypt", "--model", "acme:gpt4", "--in", str(plain), "--out", str(enc),
               "--segment-size", str(SEG))
    return plain, enc, tensors


def loads(enc: Path, client: hanzo_kms.Client, model: str = "acme:gpt4") -> None:
    """Every way of getting tensors; each must raise before returning any."""
    with pytest.raises(hanzo_kms.KmsError) as first:
        load_file(enc, model=model, client=client)
    with pytest.raises(type(first.value)):
        safe_open(enc, framework="np", model=model, client=client)
    return first.value


def test_wrong_model(model_file, loader):
    _, enc, _ = model_file
    e = loads(enc, loader, model="acme:other")
    assert isinstance(e, hanzo_kms.AuthenticationFailed), e
    assert e.code == "authentication_failed" and e.request_id and e.status


def test_token_without_decrypt_role(model_file, tokens):
    _, enc, _ = model_file
    e = loads(enc, tokens.make("acme", ["encrypt"], ["model:acme:*"]))
    assert isinstance(e, hanzo_kms.PermissionDenied), e
    assert e.code == "permission_denied" and e.status == 403 and e.request_id


def test_token_limited_to_other_keys(model_file, tokens):
    _, enc, _ = model_file
    e = loads(enc, tokens.make("acme", ["decrypt"], ["model:acme:other"]))
    assert isinstance(e, (hanzo_kms.PermissionDenied, hanzo_kms.NotFound)), e
    assert e.request_id


def test_another_tenants_token(model_file, tokens):
    _, enc, _ = model_file
    e = loads(enc, tokens.make("globex", ["decrypt", "encrypt"]))
    # A foreign tenant's key looks exactly like a missing one.
    assert isinstance(e, hanzo_kms.NotFound), e
    assert e.status == 404 and e.request_id


def test_revoked_token(model_file, tokens, admin):
    _, enc, tensors = model_file
    c = tokens.make("acme", ["decrypt"], ["model:acme:*"])
    assert load_file(enc, model="acme:gpt4", client=c)["a"].tobytes() == tensors["a"].tobytes()
    admin.revoke_token(c.token_id)
    e = loads(enc, c)
    assert isinstance(e, hanzo_kms.Unauthenticated), e
    assert e.status == 401 and e.request_id


def test_bad_token(model_file, server):
    _, enc, _ = model_file
    e = loads(enc, hanzo_kms.Client(server.rest, "hkms_not_a_token"))
    assert isinstance(e, hanzo_kms.Unauthenticated)


def test_tampered_segment_inside_requested_tensor(model_file, loader, tmp_path):
    plain, enc, tensors = model_file
    bad = tmp_path / "bad.hkms"
    shutil.copy(enc, bad)
    f = hanzo_kms._native.EncryptedFile.open(str(enc))
    header_len = len(f.header)
    n = struct.unpack("<Q", plain.read_bytes()[:8])[0]
    hdr = json.loads(plain.read_bytes()[8:8 + n])
    b0, b1 = hdr["b"]["data_offsets"]
    mid = 8 + n + (b0 + b1) // 2
    seg = mid // SEG
    pos = header_len + seg * (SEG + 16) + 100
    data = bytearray(bad.read_bytes())
    data[pos] ^= 0x01
    bad.write_bytes(bytes(data))
    with safe_open(bad, framework="np", model="acme:gpt4", client=loader) as h:
        with pytest.raises(hanzo_kms.AuthenticationFailed):
            h.get_tensor("b")
        with pytest.raises(hanzo_kms.AuthenticationFailed):
            h.get_slice("b")[:]
        with pytest.raises(hanzo_kms.AuthenticationFailed):
            h.get_tensors()
        # Segments that verify still read: the random-access design authenticates per segment.
        others = [t for t in ("a", "c") if not (hdr[t]["data_offsets"][0] + 8 + n) // SEG <= seg
                  <= (hdr[t]["data_offsets"][1] + 8 + n - 1) // SEG]
        for t in others:
            assert h.get_tensor(t).tobytes() == tensors[t].tobytes()
    with pytest.raises(hanzo_kms.AuthenticationFailed):
        load_file(bad, model="acme:gpt4", client=loader)


def test_tampered_header(model_file, loader, tmp_path):
    _, enc, _ = model_file
    bad = tmp_path / "hdr.hkms"
    data = bytearray(enc.read_bytes())
    data[20] ^= 0x80  # inside the salt
    bad.write_bytes(bytes(data))
    e = loads(bad, loader)
    assert isinstance(e, hanzo_kms.AuthenticationFailed)


@pytest.mark.parametrize("cut", ["inside", "boundary", "header"])
def test_truncated_file(model_file, loader, tmp_path, cut):
    _, enc, _ = model_file
    header_len = len(hanzo_kms._native.EncryptedFile.open(str(enc)).header)
    size = enc.stat().st_size
    keep = {"inside": size - 100,
            "boundary": header_len + ((size - header_len) // (SEG + 16) - 1) * (SEG + 16),
            "header": header_len - 3}[cut]
    bad = tmp_path / f"cut-{cut}.hkms"
    bad.write_bytes(enc.read_bytes()[:keep])
    e = loads(bad, loader)
    assert isinstance(e, hanzo_kms.AuthenticationFailed), e


def test_appended_bytes(model_file, loader, tmp_path):
    _, enc, _ = model_file
    bad = tmp_path / "long.hkms"
    bad.write_bytes(enc.read_bytes() + b"\0" * 16)
    assert isinstance(loads(bad, loader), hanzo_kms.AuthenticationFailed)


def test_file_shrinks_after_open(model_file, loader, tmp_path):
    _, enc, _ = model_file
    f = tmp_path / "shrink.hkms"
    shutil.copy(enc, f)
    with safe_open(f, framework="np", model="acme:gpt4", client=loader) as h:
        os.truncate(f, len(hanzo_kms._native.EncryptedFile.open(str(enc)).header) + 10)
        with pytest.raises(hanzo_kms.KmsError):
            h.get_tensors()


def test_unreachable_server(model_file):
    _, enc, _ = model_file
    c = hanzo_kms.Client("http://127.0.0.1:9", "hkms_x", retries=1)
    with pytest.raises(hanzo_kms.Unavailable, match="cannot reach"):
        load_file(enc, model="acme:gpt4", client=c)


def test_grpc_address_hint(model_file, server):
    _, enc, _ = model_file
    c = hanzo_kms.Client(server.grpc, "hkms_x", retries=0)
    with pytest.raises(hanzo_kms.Unavailable):
        load_file(enc, model="acme:gpt4", client=c)


def test_loads_and_refusals_are_audited(model_file, tokens, admin):
    """The server authorises every unwrap and records it: the load under the token's id, and a
    refusal under the request id the exception carries."""
    from conftest import audit_records

    _, enc, _ = model_file
    ok = tokens.make("acme", ["decrypt"], ["model:acme:*"])
    load_file(enc, model="acme:gpt4", client=ok)
    denied = loads(enc, tokens.make("acme", ["encrypt"], ["model:acme:*"]))
    records = audit_records(admin)
    mine = [r for r in records if r["principal"] == f"token:{ok.token_id}"]
    assert [(r["operation"], r["key"], r["outcome"]) for r in mine] == [
        ("model.decrypt", "model:acme:gpt4", "ok")]
    refused = [r for r in records if r["request_id"] == denied.request_id]
    assert len(refused) == 1 and refused[0]["outcome"] == "denied"
    assert refused[0]["operation"] == "model.decrypt"
