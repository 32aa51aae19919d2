#!/usr/bin/env bash
# The remote key service providers against real peers (scripts/peers.sh: OpenBao and LocalStack
# on loopback): the provider crate's tests (conformance suite, bad input), then the binary on
# each service: init, keyspace create, model encrypt/decrypt, poai sign/verify and hmm sign
# (every signature recovered by eth-account), keys migrate from software to the service, a
# refused migration out of it, backup create on the service and restore into software.
# Called by scripts/test.sh after the workspace is built; prints the seconds each part took.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
work=$(mktemp -d)
cleanup() { scripts/peers.sh stop "$work/peers" || true; rm -rf "$work"; }
trap cleanup EXIT
scripts/peers.sh start "$work/peers"
# shellcheck disable=SC1091
. "$work/peers/env"
echo "test-remote: peers up in $((SECONDS - t0)) s" >&2

t1=$SECONDS
# Workspace-wide selection keeps the features (and so the build) of scripts/test.sh.
cargo test --workspace --locked --test openbao --test aws --test aws_chain --test aws_chain_fake
echo "test-remote: provider tests in $((SECONDS - t1)) s" >&2

t2=$SECONDS
venv=target/interop-venv
kms=target/debug/hanzo-kms
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
run_id=$(python3 -c 'import secrets; print(secrets.token_hex(4))')

# section PROVIDER: the YAML of its config section.
section() {
  case "$1" in
    openbao) printf '    openbao:\n      address: %s\n      token_env: HANZO_KMS_TEST_OPENBAO_TOKEN\n      key_prefix: "r%s."\n' \
      "$HANZO_KMS_TEST_OPENBAO_ADDR" "$run_id" ;;
    aws-kms) printf '    aws-kms:\n      endpoint: %s\n      key_prefix: "r%s-"\n' "$HANZO_KMS_TEST_AWS_ENDPOINT" "$run_id" ;;
  esac
}
config() { # config FILE PROVIDER [SECTION_OF]
  { printf 'kms:\n  lux:\n    provider: %s\n' "$2"; section "${3:-$2}"; } > "$1"
}
json_field() { "$venv/bin/python" -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
address() { "$kms" --config "$1" --data-dir "$2" --json keys show "$3" | json_field '["versions"][-1]["address"]'; }
origin() { "$kms" --config "$1" --data-dir "$2" --json keys show "$3" | json_field '["origin"]'; }
expect() { [ "$1" = "$2" ] || { echo "test-remote: $3: expected '$2', got '$1'" >&2; exit 1; }; }

sign_and_check() { # sign_and_check CONFIG DATADIR TAG: poai sign/verify + hmm sign, eth-account recovers both
  local c=$1 d=$2 tag=$3 now
  now=$(date +%s)
  printf '{"model_id":"acme:gpt4","input_hash":"0x%064d","output_hash":"0x%064d","timestamp":%s,"compute_time_ms":7,"node_id":"%s"}' 1 2 "$now" "$tag" > "$work/att-$tag.json"
  "$kms" --config "$c" --data-dir "$d" poai sign --key poai:acme:gpt4 --in "$work/att-$tag.json" > "$work/signed-$tag.json"
  "$kms" --config "$c" --data-dir "$d" poai verify --in "$work/signed-$tag.json" > /dev/null
  "$venv/bin/python" scripts/eip712_interop.py "$work/signed-$tag.json" --address "$(address "$c" "$d" poai:acme:gpt4)" > /dev/null
  local digest
  digest=$(json_field '["digest"]' < "$work/signed-$tag.json")
  printf '{"job_id":"j-%s","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"12345","attestation_digest":"%s","timestamp":%s}' "$tag" "$digest" "$now" > "$work/set-$tag.json"
  "$kms" --config "$c" --data-dir "$d" hmm sign --key hmm:acme:gpt4 --in "$work/set-$tag.json" --attestation "$work/signed-$tag.json" > "$work/settled-$tag.json"
  "$venv/bin/python" scripts/eip712_interop.py "$work/settled-$tag.json" --address "$(address "$c" "$d" hmm:acme:gpt4)" > /dev/null
}

head -c 3000000 /dev/urandom > "$work/weights.bin"
for p in openbao aws-kms; do
  c="$work/$p.yaml"; d="$work/$p"
  config "$c" "$p"
  "$kms" --config "$c" --data-dir "$d" init > /dev/null
  "$kms" --config "$c" --data-dir "$d" keyspace create --customer acme --model gpt4 > /dev/null
  expect "$(origin "$c" "$d" model:acme:gpt4)" kms-resident "$p model key"
  want=kms-wrapped; [ "$p" = aws-kms ] && want=kms-resident
  expect "$(origin "$c" "$d" poai:acme:gpt4)" "$want" "$p poai key"
  "$kms" --config "$c" --data-dir "$d" model encrypt --model acme:gpt4 --in "$work/weights.bin" --out "$work/w-$p.enc" > /dev/null
  "$kms" --config "$c" --data-dir "$d" model decrypt --model acme:gpt4 --in "$work/w-$p.enc" --out "$work/w-$p.dec" > /dev/null
  cmp "$work/weights.bin" "$work/w-$p.dec"
  sign_and_check "$c" "$d" "$p"
  # Out of the service: refused before anything changes (the model key is kms-resident).
  if "$kms" --config "$c" --data-dir "$d" keys migrate --to software > "$work/mig.out" 2>&1; then
    echo "test-remote: migrating kms-resident keys out of $p was not refused" >&2; exit 1
  fi
  grep -q "model:acme:gpt4" "$work/mig.out" || { cat "$work/mig.out" >&2; exit 1; }
  sign_and_check "$c" "$d" "$p-after-refusal"
  "$kms" --config "$c" --data-dir "$d" audit verify > /dev/null

  # Into the service: a software store migrated to it, its keys kms-wrapped, same addresses.
  sw="$work/sw-$p"; cs="$work/sw-$p.yaml"
  config "$cs" software "$p"
  "$kms" --config "$cs" --data-dir "$sw" init > /dev/null
  "$kms" --config "$cs" --data-dir "$sw" keyspace create --customer acme --model gpt4 > /dev/null
  before=$(address "$cs" "$sw" poai:acme:gpt4)
  "$kms" --config "$cs" --data-dir "$sw" model encrypt --model acme:gpt4 --in "$work/weights.bin" --out "$work/sw-$p.enc" > /dev/null
  "$kms" --config "$cs" --data-dir "$sw" keys migrate --to "$p" --revoke-tokens > /dev/null
  cm="$work/migrated-$p.yaml"; config "$cm" "$p"
  expect "$(origin "$cm" "$sw" poai:acme:gpt4)" kms-wrapped "$p migrated poai key"
  expect "$(origin "$cm" "$sw" model:acme:gpt4)" kms-wrapped "$p migrated model key"
  expect "$(address "$cm" "$sw" poai:acme:gpt4)" "$before" "$p migrated address"
  "$kms" --config "$cm" --data-dir "$sw" model decrypt --model acme:gpt4 --in "$work/sw-$p.enc" --out "$work/sw-$p.dec" > /dev/null
  cmp "$work/weights.bin" "$work/sw-$p.dec"
  sign_and_check "$cm" "$sw" "$p-migrated"
  # Back up the migrated (kms-wrapped) store and restore it into a fresh software store.
  printf 'correct horse battery staple %s\n' "$run_id" > "$work/pass"
  "$kms" --config "$cm" --data-dir "$sw" backup create --out "$work/$p.bundle" --passphrase-file "$work/pass" > /dev/null
  r="$work/restored-$p"; cr="$work/restored-$p.yaml"; config "$cr" software
  "$kms" --config "$cr" --data-dir "$r" init > /dev/null
  "$kms" --config "$cr" --data-dir "$r" backup restore --in "$work/$p.bundle" --passphrase-file "$work/pass" > /dev/null
  expect "$(address "$cr" "$r" poai:acme:gpt4)" "$before" "$p restored address"
  "$kms" --config "$cr" --data-dir "$r" model decrypt --model acme:gpt4 --in "$work/sw-$p.enc" --out "$work/r-$p.dec" > /dev/null
  cmp "$work/weights.bin" "$work/r-$p.dec"
  sign_and_check "$cr" "$r" "$p-restored"
  echo "test-remote: $p through the binary: ok" >&2
done

# A keyspace that fails midway on OpenBao leaves no Transit key behind: a token whose policy
# refuses wrapping under the root KEK lets the model key be made and the poai key fail.
bao_api() { # bao_api METHOD PATH [JSON] with the root token
  python3 - "$HANZO_KMS_TEST_OPENBAO_ADDR" "$HANZO_KMS_TEST_OPENBAO_TOKEN" "$@" <<'PY'
import json, sys, urllib.request
addr, token, method, path = sys.argv[1:5]
data = sys.argv[5].encode() if len(sys.argv) > 5 else None
req = urllib.request.Request(f"{addr}/v1/{path}", data=data, method=method, headers={"X-Vault-Token": token})
try:
    print(urllib.request.urlopen(req, timeout=5).read().decode())
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code}))
PY
}
half="h$run_id"
bao_api PUT "sys/policies/acl/$half" "$(python3 -c 'import json,sys; print(json.dumps({"policy": sys.argv[1]}))' \
  "path \"transit/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }
path \"transit/encrypt/$half.root-kek\" { capabilities = [\"deny\"] }")" > /dev/null
HALF_TOKEN=$(bao_api POST auth/token/create "{\"policies\": [\"$half\"], \"no_default_policy\": true}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])')
export HALF_TOKEN
c="$work/half.yaml"; d="$work/half"
printf 'kms:\n  lux:\n    provider: openbao\n    openbao:\n      address: %s\n      token_env: HALF_TOKEN\n      key_prefix: "%s."\n' \
  "$HANZO_KMS_TEST_OPENBAO_ADDR" "$half" > "$c"
"$kms" --config "$c" --data-dir "$d" init > /dev/null
if "$kms" --config "$c" --data-dir "$d" keyspace create --customer acme --model gpt4 > "$work/half.out" 2>&1; then
  echo "test-remote: the half-permitted keyspace was not refused" >&2; exit 1
fi
grep -q "permission denied" "$work/half.out" || { cat "$work/half.out" >&2; exit 1; }
left=$(bao_api GET "transit/keys?list=true" | python3 -c 'import json,sys; print(" ".join(k for k in json.load(sys.stdin)["data"]["keys"] if k.startswith(sys.argv[1])))' "$half.model")
[ -z "$left" ] || { echo "test-remote: a failed keyspace left Transit keys behind: $left" >&2; exit 1; }
"$kms" --config "$c" --data-dir "$d" --json keys list | grep -q gpt4 && { echo "test-remote: the failed keyspace left keys in the store" >&2; exit 1; }
echo "test-remote: a keyspace failing midway on openbao left no key behind: ok" >&2
echo "test-remote: binary flows in $((SECONDS - t2)) s; total $((SECONDS - t0)) s" >&2
