#!/usr/bin/env bash
# Runs every test of Hanzo KMS. Works on a fresh Debian machine with only Rust installed:
# missing Debian packages are installed when run as root, and named otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: a C compiler; SoftHSM2 (the PKCS#11 provider's conformance
# suite runs against a real token) and OpenSC (pkcs11-tool inspects what we created);
# PostgreSQL (the HA tests start their own throw-away servers with initdb and pg_ctl).
PACKAGES=(gcc softhsm2 opensc postgresql)
# Files (globs allowed) or programs that tell whether each package is present.
PROGRAMS=(cc /usr/lib/softhsm/libsofthsm2.so pkcs11-tool '/usr/lib/postgresql/*/bin/initdb')

missing=()
for i in "${!PACKAGES[@]}"; do
  p="${PROGRAMS[$i]}"
  if [[ "$p" == /* ]]; then compgen -G "$p" >/dev/null && continue; else command -v "$p" >/dev/null 2>&1 && continue; fi
  missing+=("${PACKAGES[$i]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "scripts/test.sh: missing Debian packages: ${missing[*]}" >&2
    echo "  install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

command -v cargo >/dev/null 2>&1 || { echo "scripts/test.sh: cargo not found; install Rust first" >&2; exit 1; }

# Interop: our EIP-712 digests and secp256k1 signatures against an independent implementation
# (eth-account, from PyPI, in a virtualenv under target/).
if ! python3 -m venv --help >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip
  else
    echo "scripts/test.sh: python3 venv is missing; install it with: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
fi
venv=target/interop-venv
install_interop() {
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import eth_account" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check eth-account
  fi
}
# The Python and npm installs only download and unpack, so they run while cargo builds: each into
# its own directory (no two pip runs share a virtualenv), each logged under target/prepare/.
mkdir -p target/prepare
prepare_pids=() prepare_names=()
prepare() { # prepare NAME COMMAND...
  "${@:2}" > "target/prepare/$1.log" 2>&1 &
  prepare_pids+=($!) prepare_names+=("$1")
}
prepare interop install_interop
prepare peers scripts/peers.sh install
prepare gcp scripts/gcp-fake-venv.sh
prepare python scripts/test-python.sh --prepare
if command -v npm >/dev/null 2>&1; then prepare contracts scripts/test-contracts.sh --prepare; fi
prepared() {
  local i failed=0
  for i in "${!prepare_pids[@]}"; do
    if ! wait "${prepare_pids[$i]}"; then
      echo "scripts/test.sh: installing ${prepare_names[$i]} failed:" >&2
      tail -n 30 "target/prepare/${prepare_names[$i]}.log" >&2
      failed=1
    fi
  done
  return "$failed"
}
# Build every target once, with the workspace's feature set (building one package first would
# resolve features differently and compile much of the tree twice): the binary, the example
# (target/debug/examples/) and every test harness, which `cargo test` below reuses.
build_started=$SECONDS
cargo build --workspace --all-targets --locked
echo "scripts/test.sh: build in $((SECONDS - build_started)) s" >&2
prepared
timed() { # timed COMMAND...: runs it, then logs how long it took
  local started=$SECONDS
  "$@"
  echo "scripts/test.sh: $* in $((SECONDS - started)) s" >&2
}
timed scripts/test-remote.sh   # OpenBao and LocalStack on loopback: the remote providers' tests and the binary on each (docs/providers.md)
timed scripts/test-gcp.sh   # HIP-005's sample config through the binary on the FAKE Google Cloud KMS (docs/providers.md)
timed scripts/test-python.sh   # the Python package (python/): wheel, pytest against the binary just built
timed scripts/test-contracts.sh   # Solidity contracts on a real EVM, against this build's hanzo-kms (docs/onchain.md)
kms=target/debug/hanzo-kms
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HANZO_KMS_DATA_DIR="$work/data"
"$kms" init >/dev/null
"$kms" keyspace create --customer acme --model gpt4 >/dev/null
now=$(date +%s)
printf '{"model_id":"acme:gpt4","input_hash":"0x%064d","output_hash":"0x%064d","timestamp":%s,"compute_time_ms":7,"node_id":"n1"}' 1 2 "$now" > "$work/att.json"
"$kms" poai sign --key poai:acme:gpt4 --in "$work/att.json" > "$work/signed.json"
digest=$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["digest"])' "$work/signed.json")
printf '{"job_id":"j1","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"12345678901234567890123","attestation_digest":"%s","timestamp":%s}' "$digest" "$now" > "$work/settlement.json"
"$kms" hmm sign --key hmm:acme:gpt4 --in "$work/settlement.json" --attestation "$work/signed.json" > "$work/settled.json"
addr_of() { "$kms" --json keys show "$1" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["versions"][0]["address"])'; }
"$venv/bin/python" scripts/eip712_interop.py "$work/signed.json" --address "$(addr_of poai:acme:gpt4)"
"$venv/bin/python" scripts/eip712_interop.py "$work/settled.json" --address "$(addr_of hmm:acme:gpt4)"
unset HANZO_KMS_DATA_DIR

# The spec's "complete AI inference flow" (crates/client/examples/inference_flow.rs) against a real
# `hanzo-kms serve`, over gRPC and REST; the settlement it prints must verify with eth-account
# under the HMM key's address, which the CLI reads from the same server with --server.
"$kms" --data-dir "$work/served" --json serve --rest-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
  > "$work/serve.out" 2> "$work/serve.err" &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '"grpc"' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
field() { "$venv/bin/python" -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"grpc\"" in l][0][sys.argv[2]])' "$work/serve.out" "$1"; }
grpc_url=$(field grpc); rest_url=$(field rest)
for proto in grpc rest; do
  url=$grpc_url; [ "$proto" = rest ] && url=$rest_url
  HANZO_KMS_URL=$url HANZO_KMS_PROTOCOL=$proto HANZO_KMS_MODEL="flow-$proto" \
    HANZO_KMS_TOKEN_FILE="$work/served/admin.token" \
    target/debug/examples/inference_flow > "$work/flow-$proto.json"
  hmm_addr=$("$kms" --server "$grpc_url" --token-file "$work/served/admin.token" --json keys show "hmm:acme:flow-$proto" \
    | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["versions"][0]["address"])')
  "$venv/bin/python" scripts/eip712_interop.py "$work/flow-$proto.json" --address "$hmm_addr"
done
kill -TERM "$serve_pid"
wait "$serve_pid"

# SoftHSM2 tokens made by earlier runs (target/softhsm2, see .cargo/config.toml) are throwaway.
rm -rf target/softhsm2

# Doc tests first (cargo test --all-targets skips them), then every unit and integration test.
timed cargo test --workspace --doc --locked
timed cargo test --workspace --all-targets --locked "$@"
