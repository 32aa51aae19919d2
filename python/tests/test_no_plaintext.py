"""No plaintext file is created anywhere during a load.

The load runs in a child process whose working directory and temporary directory are fresh
empty folders; both must still be empty afterwards. Where strace exists (scripts/test-python.sh
installs it), every file the child opens for writing or creates is also listed from its system
calls, which catches a file created and removed again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import safetensors.numpy

CHILD = textwrap.dedent(
    """
    import sys, numpy as np, hanzo_kms
    from hanzo_kms.safetensors import load_file, safe_open
    rest, token, enc = sys.argv[1:4]
    c = hanzo_kms.Client(rest, token)
    t = load_file(enc, model="acme:gpt4", client=c)
    with safe_open(enc, framework="np", model="acme:gpt4", client=c) as f:
        one = f.get_tensor("w")
        part = f.get_slice("w")[3:9]
    print(float(t["w"].sum()), float(one.sum()), part.shape)
    """
)


def test_load_creates_no_file(server, tokens, tmp_path):
    c = tokens.make("acme", ["decrypt"], ["model:acme:*"])
    w = np.random.default_rng(9).standard_normal((512, 256)).astype(np.float32)
    plain, enc = tmp_path / "p.safetensors", tmp_path / "p.hkms"
    safetensors.numpy.save_file({"w": w, "b": np.arange(10)}, str(plain))
    server.cli("model", "encrypt", "--model", "acme:gpt4", "--in", str(plain), "--out", str(enc))
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    args = [sys.executable, "-c", CHILD, server.rest, c._token, str(enc)]
    trace = tmp_path / "strace.log"
    strace = shutil.which("strace")
    if strace:
        args = [strace, "-f", "-qq", "-e", "trace=open,openat,openat2,creat,rename,renameat,renameat2,link,linkat,mknod,mknodat",
                "-o", str(trace), *args]
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    assert f"{float(w.sum())}" in out.stdout or abs(float(out.stdout.split()[0]) - float(w.sum())) < 1e-3
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    if not strace:
        pytest.skip("strace not installed: checked the directories only")
    writes = []
    for line in trace.read_text().splitlines():
        if any(f in line for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "creat(", "rename", "link(", "linkat(", "mknod")):
            if "ENOENT" in line or "/dev/" in line or "/proc/" in line:
                continue
            writes.append(line)
    assert writes == [], "\n".join(writes)
