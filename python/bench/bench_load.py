"""Benchmark (not a test): hanzo_kms.safetensors against safetensors on the same machine, same run.

1. load_file of a model of --size GiB from the page cache: ours on the encrypted file against
   safetensors.numpy.load_file on the plaintext, each in a fresh process, best of --runs; also
   with every page of every tensor touched afterwards (safetensors maps the file lazily, so its
   load alone reads nothing). Peak RSS of each process against the tensors' size.
2. get_tensor of tensors of 1, 16 and 256 MiB out of a --big GiB file and out of a 300 MiB file:
   the time follows the tensor, not the file.

Usage (from the repository root, with a release wheel installed in the venv):
    target/python-venv/bin/python python/bench/bench_load.py --size 1 --big 4 --runs 5

It starts its own `hanzo-kms serve` ($HANZO_KMS_BIN or target/release/hanzo-kms, else
target/debug/hanzo-kms) on a throw-away data directory on loopback, and writes its files under
--dir (default: a temporary directory; 1 + 1 + 4 + 0.3 GiB for the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20

CHILD = r"""
import json, resource, sys, time
import numpy as np
which, path, rest, token, touch, threads = sys.argv[1:7]
t0 = time.perf_counter()
if which == "safetensors":
    import safetensors.numpy
    d = safetensors.numpy.load_file(path)
else:
    import hanzo_kms
    from hanzo_kms.safetensors import load_file
    c = hanzo_kms.Client(rest, token, threads=int(threads) or None)
    d = load_file(path, model="bench:model", client=c)
t1 = time.perf_counter()
if touch == "1":
    s = 0
    for a in d.values():
        s += int(a.reshape(-1).view(np.uint8)[::4096].sum())
t2 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"load": t1 - t0, "touch": t2 - t1, "cpu": ru.ru_utime + ru.ru_stime,
                  "bytes": sum(a.nbytes for a in d.values()), "maxrss": hwm}))
"""

BASELINE = r"""
import json
import numpy, hanzo_kms, safetensors.numpy
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"maxrss": hwm}))
"""


def kms_bin() -> str:
    for b in (os.environ.get("HANZO_KMS_BIN"), REPO / "target/release/hanzo-kms", REPO / "target/debug/hanzo-kms"):
        if b and os.access(b, os.X_OK):
            return str(b)
    sys.exit("no hanzo-kms binary: cargo build --release -p hanzo-kms-cli")


def start_server(base: Path):
    out = base / "serve.out"
    with open(out, "wb") as o, open(base / "serve.err", "wb") as e:
        proc = subprocess.Popen([kms_bin(), "--data-dir", str(base / "data"), "--json", "serve",
                                 "--rest-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
                                stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    for _ in range(600):
        for line in out.read_text().splitlines():
            if '"rest"' in line:
                return proc, json.loads(line)["rest"], (base / "data" / "admin.token").read_text().strip()
        time.sleep(0.05)
    proc.kill()
    sys.exit("hanzo-kms serve did not start")


def model(total: int, tensor: int) -> dict:
    """float32 tensors of `tensor` bytes up to `total` bytes, with varied content."""
    out, i = {}, 0
    while total > 0:
        n = min(tensor, total)
        out[f"layer.{i:04d}.weight"] = np.full(n // 4, i, dtype=np.float32) + np.float32(0.5)
        total -= n
        i += 1
    return out


def run_child(which: str, path: Path, rest: str, token: str, touch: bool, threads: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, which, str(path), rest, token, "1" if touch else "0", str(threads)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 * MiB):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=1.0, help="GiB of tensors for the load_file comparison")
    ap.add_argument("--big", type=float, default=4.0, help="GiB of the large file for get_tensor")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="decryption threads (0: all cores)")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()

    import hanzo_kms
    import safetensors.numpy
    from hanzo_kms.safetensors import safe_open, save_file

    base = Path(tempfile.mkdtemp(prefix="hkms-bench-", dir=args.dir))
    proc, rest, token = start_server(base)
    try:
        kms = hanzo_kms.Client(rest, token)
        kms.create_model_keyspace("bench", "model", signing_keys=False)
        print(f"# machine: {os.cpu_count()} cores; numpy {np.__version__}; safetensors "
              f"{safetensors.__version__}; hanzo_kms {hanzo_kms.__version__}")

        # 1. load_file
        size = int(args.size * (1 << 30))
        tensors = model(size, 16 * MiB)
        plain, enc = base / "m.safetensors", base / "m.hkms"
        safetensors.numpy.save_file(tensors, str(plain))
        save_file(tensors, enc, model="bench:model", client=kms)
        del tensors
        warm(plain)
        warm(enc)
        base_rss = json.loads(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True,
                                             text=True, check=True).stdout)["maxrss"]
        print(f"\n## load_file, {size / (1 << 30):.2f} GiB in {size // (16 * MiB)} tensors, page cache warm, best and median of {args.runs}, interleaved")
        print(f"interpreter + imports alone: peak RSS {base_rss / MiB:.0f} MiB")
        results = {}
        for touch in (False, True):
            # Interleaved (ours, theirs, ours, ...), so a busy spell of the machine hits both.
            runs = {"safetensors": [], "hanzo_kms": []}
            for _ in range(args.runs):
                for which, path in (("safetensors", plain), ("hanzo_kms", enc)):
                    runs[which].append(run_child(which, path, rest, token, touch, args.threads))
            for which in ("safetensors", "hanzo_kms"):
                rs = sorted(runs[which], key=lambda r: r["load"] + r["touch"])
                best, med = rs[0], rs[len(rs) // 2]
                results[(which, touch)] = (best, med)
                t, tm = best["load"] + best["touch"], med["load"] + med["touch"]
                cpu = sorted(r["cpu"] for r in rs)
                print(f"{which:12s} {'load+touch' if touch else 'load      '}: best {t:6.3f} s "
                      f"({best['bytes'] / t / (1 << 30):5.2f} GiB/s), median {tm:6.3f} s; CPU best "
                      f"{cpu[0]:6.3f} s, median {cpu[len(cpu) // 2]:6.3f} s; peak RSS "
                      f"{max(r['maxrss'] for r in rs) / MiB:5.0f} MiB = tensors + "
                      f"{(max(r['maxrss'] for r in rs) - best['bytes']) / MiB:5.0f} MiB")
        for touch in (False, True):
            (a, am), (b, bm) = results[("safetensors", touch)], results[("hanzo_kms", touch)]
            wall = lambda r: r["load"] + r["touch"]  # noqa: E731
            print(f"ours as % of safetensors' speed ({'load+touch' if touch else 'load'}): "
                  f"best {wall(a) / wall(b) * 100:.0f} %, median {wall(am) / wall(bm) * 100:.0f} %")

        # 2. get_tensor from a big file and a small one
        print(f"\n## get_tensor, one tensor out of a {args.big:.0f} GiB file vs out of a 300 MiB file")
        probes = {"t1": 1 * MiB, "t16": 16 * MiB, "t256": 256 * MiB}
        files = {}
        for label, total in (("big", int(args.big * (1 << 30))), ("small", 300 * MiB)):
            path = base / f"{label}.hkms"
            fill = total - sum(probes.values())
            t = {k: np.full(v // 4, 1.5, np.float32) for k, v in probes.items()}
            t.update(model(max(fill, 0), 64 * MiB))
            save_file(t, path, model="bench:model", client=kms)
            del t
            warm(path)
            files[label] = path
        for name, nbytes in probes.items():
            line = []
            for label, path in files.items():
                best = float("inf")
                with safe_open(path, framework="np", model="bench:model", client=kms,
                               threads=args.threads or None) as f:
                    for _ in range(args.runs):
                        before = f.segments_decrypted
                        t0 = time.perf_counter()
                        a = f.get_tensor(name)
                        best = min(best, time.perf_counter() - t0)
                        segs = f.segments_decrypted - before
                        del a
                line.append(f"{label} file ({path.stat().st_size / (1 << 30):.2f} GiB): {best * 1000:8.2f} ms, "
                            f"{segs} segments")
            print(f"{name:5s} ({nbytes // MiB:4d} MiB): " + "; ".join(line))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
