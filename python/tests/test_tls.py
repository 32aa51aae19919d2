"""TLS and mutual TLS, as the Rust client and the CLI take them: a CA file, a client certificate
and key. Certificates are made with the openssl command (scripts/test-python.sh installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import hanzo_kms
from hanzo_kms.safetensors import load_file

from conftest import start_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(d: Path) -> dict:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2", "-subj", "/CN=test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / f"{name}.pem"),
                "-days", "2", "-extfile", str(d / f"{name}.ext"))
    return {k: d / v for k, v in {"ca": "ca.pem", "cert": "server.pem", "key": "server.key",
                                  "client_cert": "client.pem", "client_key": "client.key"}.items()}


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_server(tmp_path, mutual):
    pki = make_pki(tmp_path)
    tls = f"    cert_file: {pki['cert']}\n    key_file: {pki['key']}\n"
    if mutual:
        tls += f"    client_ca_file: {pki['ca']}\n"
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  tls:\n" + tls)
    proc, addrs = start_server(tmp_path / "data", tmp_path, "--config", str(cfg))
    try:
        rest = addrs["rest"]
        assert rest.startswith("https://")
        token = tmp_path / "data" / "admin.token"
        extra = {"tls_cert": pki["client_cert"], "tls_key": pki["client_key"]} if mutual else {}
        kms = hanzo_kms.Client(rest, token_file=token, tls_ca=pki["ca"], **extra)
        kms.create_model_keyspace("acme", "gpt4", signing_keys=False)
        plain, enc = tmp_path / "m.safetensors", tmp_path / "m.hkms"
        safetensors.numpy.save_file({"w": np.arange(6.0)}, str(plain))
        sealed = kms.encrypt_model_weights("acme:gpt4", plain.read_bytes())
        enc.write_bytes(sealed)
        assert load_file(enc, model="acme:gpt4", client=kms)["w"].tolist() == [0, 1, 2, 3, 4, 5]
        # Not trusting the server's CA fails the handshake: unavailable, naming the server.
        with pytest.raises(hanzo_kms.Unavailable, match="cannot reach"):
            hanzo_kms.Client(rest, token_file=token, retries=0, **extra).list_keys()
        if mutual:
            with pytest.raises(hanzo_kms.Unavailable):
                hanzo_kms.Client(rest, token_file=token, tls_ca=pki["ca"], retries=0).list_keys()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with pytest.raises(hanzo_kms.InvalidArgument, match="together"):
        hanzo_kms.Client(rest, "t", tls_cert=pki["client_cert"])
