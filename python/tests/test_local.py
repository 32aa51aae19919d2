"""Offline use: unwrap through a data directory (a `hanzo-kms serve` the package starts on it)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import safetensors.numpy

import hanzo_kms
from hanzo_kms.safetensors import load_file, safe_open, save_file

from conftest import kms_bin


def offline(data_dir, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANZO_KMS_")}
    return subprocess.run([kms_bin(), "--data-dir", str(data_dir), *args], env=env,
                          capture_output=True, check=True)


def test_data_dir_made_by_init(tmp_path):
    data = tmp_path / "data"
    offline(data, "init")
    offline(data, "keyspace", "create", "--customer", "acme", "--model", "gpt4")
    tensors = {"w": np.arange(1000, dtype=np.float32).reshape(10, 100), "b": np.ones(3, np.int8)}
    plain, enc = tmp_path / "m.safetensors", tmp_path / "m.hkms"
    safetensors.numpy.save_file(tensors, str(plain))
    offline(data, "model", "encrypt", "--model", "acme:gpt4", "--in", str(plain), "--out", str(enc))
    got = load_file(enc, model="acme:gpt4", data_dir=data)
    assert got["w"].tobytes() == tensors["w"].tobytes() and got["b"].tobytes() == tensors["b"].tobytes()
    # The minted token was revoked on close; the decryption is in the directory's audit log.
    listed = offline(data, "--json", "tokens", "list").stdout.decode()
    assert "revoked" in listed
    audit = offline(data, "--json", "audit", "list", "--limit", "1000").stdout.decode()
    assert "model.decrypt" in audit
    # Written offline, read by the CLI.
    enc2, out = tmp_path / "s.hkms", tmp_path / "s.safetensors"
    save_file(tensors, enc2, model="acme:gpt4", data_dir=data)
    offline(data, "model", "decrypt", "--model", "acme:gpt4", "--in", str(enc2), "--out", str(out))
    assert out.read_bytes() == safetensors.numpy.save(tensors)


def test_local_client_refuses_wrong_model(tmp_path):
    data = tmp_path / "data"
    offline(data, "init")
    offline(data, "keyspace", "create", "--customer", "acme", "--model", "gpt4")
    offline(data, "keyspace", "create", "--customer", "acme", "--model", "other")
    plain, enc = tmp_path / "m.safetensors", tmp_path / "m.hkms"
    safetensors.numpy.save_file({"x": np.zeros(4)}, str(plain))
    offline(data, "model", "encrypt", "--model", "acme:gpt4", "--in", str(plain), "--out", str(enc))
    with hanzo_kms.Client.local(data) as c:
        try:
            safe_open(enc, framework="np", model="acme:other", client=c)
        except hanzo_kms.AuthenticationFailed as e:
            assert e.request_id
        else:
            raise AssertionError("opened under the wrong model")


def test_missing_binary(tmp_path):
    try:
        hanzo_kms.Client.local(tmp_path, binary=str(tmp_path / "nope"))
    except (hanzo_kms.Unavailable, OSError):
        pass
    else:
        raise AssertionError("started a missing binary")
