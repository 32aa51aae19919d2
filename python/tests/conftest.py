"""Fixtures: a real `hanzo-kms serve` on loopback, its admin client, tokens and model files.

The binary is $HANZO_KMS_BIN, else target/debug/hanzo-kms of the repository (scripts/test.sh
builds it before scripts/test-python.sh runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import hanzo_kms

REPO = Path(__file__).resolve().parents[2]


def kms_bin() -> str:
    b = os.environ.get("HANZO_KMS_BIN") or str(REPO / "target" / "debug" / "hanzo-kms")
    if not os.access(b, os.X_OK):
        pytest.exit(f"{b} not found: build it with `cargo build -p hanzo-kms-cli` or set HANZO_KMS_BIN", 2)
    return b


class Server:
    def __init__(self, data_dir: Path, rest: str, grpc: str) -> None:
        self.data_dir = data_dir
        self.rest = rest
        self.grpc = grpc
        self.admin_token_file = data_dir / "admin.token"

    def cli(self, *args: str, token_file: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """The CLI against this server (gRPC)."""
        tf = token_file or self.admin_token_file
        return subprocess.run(
            [kms_bin(), "--server", self.grpc, "--token-file", str(tf), *args],
            capture_output=True,
            check=check,
            env={k: v for k, v in os.environ.items() if not k.startswith("HANZO_KMS_")},
        )


def start_server(data_dir: Path, out_dir: Path, *extra: str) -> tuple[subprocess.Popen, Dict[str, str]]:
    out = out_dir / "serve.out"
    err = out_dir / "serve.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANZO_KMS_")}
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [kms_bin(), "--data-dir", str(data_dir), "--json", *extra, "serve",
             "--rest-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
            stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if '"grpc"' in line:
                return proc, json.loads(line)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"hanzo-kms serve did not start: {err.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("server")
    proc, addrs = start_server(base / "data", base)
    try:
        yield Server(base / "data", addrs["rest"], addrs["grpc"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[hanzo_kms.Client]:
    c = hanzo_kms.Client(server.rest, token_file=server.admin_token_file)
    c.create_model_keyspace("acme", "gpt4")
    c.create_model_keyspace("acme", "other", signing_keys=False)
    c.create_model_keyspace("globex", "gpt4", signing_keys=False)
    yield c
    c.close()


class Tokens:
    """Narrow tokens: acme's loader (encrypt+decrypt on model:acme:*), an encrypt-only one, and
    globex's decrypt token."""

    def __init__(self, server: Server, admin: hanzo_kms.Client, tmp: Path) -> None:
        self.server = server
        self.admin = admin
        self.tmp = tmp

    def make(self, tenant: str, roles: List[str], patterns: List[str] | None = None) -> hanzo_kms.Client:
        t = self.admin.create_token(tenant, roles, patterns)
        c = hanzo_kms.Client(self.server.rest, t["token"])
        c.token_id = t["id"]  # type: ignore[attr-defined]
        return c

    def file(self, client: hanzo_kms.Client) -> Path:
        p = self.tmp / f"token-{client.token_id}"  # type: ignore[attr-defined]
        p.write_text(client._token or "")
        return p


@pytest.fixture(scope="session")
def tokens(server: Server, admin: hanzo_kms.Client, tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return Tokens(server, admin, tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="session")
def loader(tokens: Tokens) -> hanzo_kms.Client:
    """acme's inference node: encrypt and decrypt on acme's model keys."""
    return tokens.make("acme", ["encrypt", "decrypt"], ["model:acme:*"])


def audit_records(admin: hanzo_kms.Client) -> List[dict]:
    """Every audit record, paging through /v1/audit (each page read is itself audited, so the
    last page is the first one shorter than the limit)."""
    out: List[dict] = []
    while True:
        page = admin.audit(after=out[-1]["seq"] if out else 0, limit=1000)
        out.extend(page)
        if len(page) < 1000:
            return out
