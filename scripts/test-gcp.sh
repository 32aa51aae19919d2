#!/usr/bin/env bash
# HIP-005's sample configuration, unchanged except for the credentials path and an `endpoint`
# line, run through the `hanzo-kms` binary against the FAKE Google Cloud KMS server
# (scripts/fake_gcp_kms.py; no Google Cloud KMS emulator exists, DESIGN.md §7):
# init, keyspace create, model encrypt/decrypt, poai sign/verify, hmm sign; eth-account recovers
# both signatures to the keys' addresses; the fake's call counts show the work was remote.
# Then, as scripts/test-remote.sh does for AWS KMS and OpenBao: a keyspace whose second or third
# key fails at the fake leaves no key in the store and every key it made destroyed at the fake;
# `keys migrate --to software` out of the fake is refused (kms-resident keys cannot move);
# a software store migrated into the fake (`keys migrate --to google-cloud-kms`), backed up,
# and restored into software keeps its addresses and decrypts its model file.
#
#   scripts/test-gcp.sh [path/to/hanzo-kms]     (default: target/debug/hanzo-kms;
#                                               scripts/test-gcp.sh --release builds and uses
#                                               target/release/hanzo-kms)
# Needs target/interop-venv (eth-account), which scripts/test.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
kms=${1:-$target/debug/hanzo-kms}
if [ "$kms" = --release ]; then
  cargo build --release --locked -p hanzo-kms-cli
  kms=$target/release/hanzo-kms
fi
[ -x "$kms" ] || { echo "scripts/test-gcp.sh: $kms is not built" >&2; exit 1; }
kms=$(cd "$(dirname "$kms")" && pwd)/$(basename "$kms")
python=$(scripts/gcp-fake-venv.sh)
venv=target/interop-venv
[ -x "$venv/bin/python" ] || { echo "scripts/test-gcp.sh: $venv is missing (scripts/test.sh makes it)" >&2; exit 1; }

work=$(mktemp -d)
fake_pid=
cleanup() { [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$python" scripts/fake_gcp_kms.py --dir "$work/fake" > "$work/fake.out" &
fake_pid=$!
for _ in $(seq 100); do [ -s "$work/fake.out" ] && break; sleep 0.1; done
endpoint=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' "$work/fake.out")
echo "test-gcp (fake Google Cloud KMS at $endpoint) with $kms"

# The spec's sample, from docs/../spec: only the credentials path changes and `endpoint` is added.
cat > "$work/hanzo-kms.yaml" <<EOF
# Hanzo KMS Configuration
kms:
  # Use Lux KMS as base
  base: lux-kms

  # Lux KMS configuration (LP-325)
  lux:
    provider: google-cloud-kms  # or aws-cloudhsm, yubihsm2, etc.
    google-cloud-kms:
      project_id: hanzo-ai-prod
      location: global
      key_ring: hanzo-kms-keyring
      credentials: $work/fake/credentials.json
      endpoint: $endpoint

  # Hanzo AI extensions
  hanzo:
    # Model weight encryption
    model_encryption:
      algorithm: AES-256-GCM
      key_rotation_days: 90
      key_prefix: "model/"

    # PoAI signing keys
    poai_signing:
      algorithm: ECDSA-secp256k1  # or ML-DSA-65 for post-quantum
      key_prefix: "poai/"
      attestation_ttl: 3600  # 1 hour

    # HMM settlement keys
    hmm_settlement:
      algorithm: ECDSA-secp256k1
      key_prefix: "hmm/"
      settlement_expiry: 86400  # 24 hours

    # Multi-tenancy
    key_isolation:
      per_model: true
      per_customer: true
      namespace_separator: ":"
EOF

run() { env -u HANZO_KMS_DATA_DIR -u HANZO_KMS_CONFIG -u HANZO_KMS_MASTER_KEY \
  "$kms" --data-dir "$work/data" --config "$work/hanzo-kms.yaml" "$@"; }
json() { "$venv/bin/python" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

run init > /dev/null
run keyspace create --customer acme --model gpt4 > /dev/null
for k in model:acme:gpt4 poai:acme:gpt4 hmm:acme:gpt4; do
  provider=$(run --json keys show "$k" | json 'd["provider"]')
  [ "$provider" = google-cloud-kms ] || { echo "$k: provider $provider" >&2; exit 1; }
done
origin=$(run --json keys show poai:acme:gpt4 | json 'd["origin"]')
[ "$origin" = kms-resident ] || { echo "poai:acme:gpt4: origin $origin, expected kms-resident (secp256k1 in Cloud HSM)" >&2; exit 1; }

head -c 3000000 /dev/urandom > "$work/weights.bin"
run model encrypt --model acme:gpt4 --in "$work/weights.bin" --out "$work/weights.hkms" > /dev/null
run model decrypt --model acme:gpt4 --in "$work/weights.hkms" --out "$work/weights.out" > /dev/null
cmp "$work/weights.bin" "$work/weights.out"

now=$(date +%s)
printf '{"model_id":"acme:gpt4","input_hash":"0x%064d","output_hash":"0x%064d","timestamp":%s,"compute_time_ms":7,"node_id":"n1"}' 1 2 "$now" > "$work/att.json"
run poai sign --key poai:acme:gpt4 --in "$work/att.json" > "$work/signed.json"
valid=$(run poai verify --in "$work/signed.json" | json 'd["valid"]')
[ "$valid" = True ] || { echo "poai verify: $valid" >&2; exit 1; }
digest=$(json 'd["digest"]' < "$work/signed.json")
printf '{"job_id":"j1","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"12345678901234567890123","attestation_digest":"%s","timestamp":%s}' "$digest" "$now" > "$work/settlement.json"
run hmm sign --key hmm:acme:gpt4 --in "$work/settlement.json" --attestation "$work/signed.json" > "$work/settled.json"
addr_of() { run --json keys show "$1" | json 'd["versions"][0]["address"]'; }
"$venv/bin/python" scripts/eip712_interop.py "$work/signed.json" --address "$(addr_of poai:acme:gpt4)"
"$venv/bin/python" scripts/eip712_interop.py "$work/settled.json" --address "$(addr_of hmm:acme:gpt4)"

# The work was done by the (fake) service: DEKs wrapped and unwrapped there, signatures made there.
stats=$("$python" -c 'import json,sys,urllib.request; print(json.dumps(json.load(urllib.request.urlopen(sys.argv[1] + "/__fake/stats"))))' "$endpoint")
echo "fake Google Cloud KMS calls: $stats"
"$python" - "$stats" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
for m, n in [("encrypt", 1), ("decrypt", 1), ("asymmetricSign", 2), ("token", 1)]:
    assert s.get(m, 0) >= n, f"expected at least {n} {m} calls at the fake, got {s}"
EOF
echo "test-gcp: HIP-005 sample config on the fake Google Cloud KMS: ok"

fake() { # fake METHOD PATH [JSON]: the fake's test hooks
  "$python" - "$endpoint" "$@" <<'PY'
import sys, urllib.request
endpoint, method, path = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(endpoint + path, data=data, method=method,
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=5).read().decode())
PY
}
# keys_like TEXT: "name=state,state" for every CryptoKey at the fake whose id contains TEXT.
keys_like() {
  fake GET /__fake/keys | "$python" -c '
import json, sys
for name, k in sorted(json.load(sys.stdin).items()):
    if sys.argv[1] in name.rsplit("/", 1)[1]:
        print(name.rsplit("/", 1)[1] + "=" + ",".join(k["versions"].values()))' "$1"
}

# A keyspace whose second (poai) or third (hmm) key is refused at the fake: nothing in the
# store, and the keys made before the refusal are destroyed (Cloud KMS never deletes a
# CryptoKey, only schedules its versions' destruction: each is DESTROY_SCHEDULED).
for after in 1 2; do
  m=half$after
  fake POST /__fake/fault "{\"kind\": \"denied\", \"method\": \"create\", \"after\": $after, \"count\": 1}" > /dev/null
  if run keyspace create --customer acme --model "$m" > "$work/$m.out" 2>&1; then
    echo "test-gcp: a keyspace whose key $((after + 1)) was refused was created" >&2; exit 1
  fi
  fake POST /__fake/fault '{"kind": "clear"}' > /dev/null
  grep -q "Google Cloud KMS" "$work/$m.out" && grep -q "PERMISSION_DENIED" "$work/$m.out" \
    || { echo "test-gcp: unclear error:" >&2; cat "$work/$m.out" >&2; exit 1; }
  if run --json keys list | grep -q "$m"; then
    echo "test-gcp: the failed keyspace acme:$m left keys in the store" >&2; exit 1
  fi
  left=$(keys_like "acme_$m")
  made=$(printf '%s\n' "$left" | grep -c . || true)
  [ "$made" = "$after" ] || { echo "test-gcp: expected $after key(s) made before the refusal, got: $left" >&2; exit 1; }
  if printf '%s\n' "$left" | grep -v '=DESTROY_SCHEDULED$'; then
    echo "test-gcp: a failed keyspace left live keys at the fake: $left" >&2; exit 1
  fi
  echo "test-gcp: keyspace refused at key $((after + 1)) of 3: store empty, $after key(s) made and destroyed at the fake"
done

# sign_and_check CONFIG DATADIR TAG: poai sign/verify and hmm sign, both recovered by eth-account.
sign_and_check() {
  local c=$1 d=$2 tag=$3 now digest
  now=$(date +%s)
  printf '{"model_id":"acme:gpt4","input_hash":"0x%064d","output_hash":"0x%064d","timestamp":%s,"compute_time_ms":7,"node_id":"%s"}' 1 2 "$now" "$tag" > "$work/att-$tag.json"
  k() { env -u HANZO_KMS_DATA_DIR -u HANZO_KMS_CONFIG -u HANZO_KMS_MASTER_KEY "$kms" --config "$c" --data-dir "$d" "$@"; }
  k poai sign --key poai:acme:gpt4 --in "$work/att-$tag.json" > "$work/signed-$tag.json"
  k poai verify --in "$work/signed-$tag.json" > /dev/null
  "$venv/bin/python" scripts/eip712_interop.py "$work/signed-$tag.json" \
    --address "$(k --json keys show poai:acme:gpt4 | json 'd["versions"][-1]["address"]')" > /dev/null
  digest=$(json 'd["digest"]' < "$work/signed-$tag.json")
  printf '{"job_id":"j-%s","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"12345","attestation_digest":"%s","timestamp":%s}' "$tag" "$digest" "$now" > "$work/set-$tag.json"
  k hmm sign --key hmm:acme:gpt4 --in "$work/set-$tag.json" --attestation "$work/signed-$tag.json" > "$work/settled-$tag.json"
  "$venv/bin/python" scripts/eip712_interop.py "$work/settled-$tag.json" \
    --address "$(k --json keys show hmm:acme:gpt4 | json 'd["versions"][-1]["address"]')" > /dev/null
}
kms_at() { local c=$1 d=$2; shift 2; env -u HANZO_KMS_DATA_DIR -u HANZO_KMS_CONFIG -u HANZO_KMS_MASTER_KEY "$kms" --config "$c" --data-dir "$d" "$@"; }
expect() { [ "$1" = "$2" ] || { echo "test-gcp: $3: expected '$2', got '$1'" >&2; exit 1; }; }

# Out of the service: refused before anything changes (the model and signing keys are
# kms-resident, their material cannot leave Cloud KMS).
if run keys migrate --to software > "$work/mig-out.out" 2>&1; then
  echo "test-gcp: migrating kms-resident keys out of Google Cloud KMS was not refused" >&2; exit 1
fi
grep -q "model:acme:gpt4" "$work/mig-out.out" && grep -q "kms-resident in Google Cloud KMS" "$work/mig-out.out" \
  || { echo "test-gcp: unclear refusal:" >&2; cat "$work/mig-out.out" >&2; exit 1; }
expect "$(run --json keys show model:acme:gpt4 | json 'd["provider"]')" google-cloud-kms "model key after the refused migration"
sign_and_check "$work/hanzo-kms.yaml" "$work/data" after-refusal
echo "test-gcp: keys migrate --to software out of Google Cloud KMS refused (kms-resident keys): ok"

# Into the service: a software store (with a google-cloud-kms section to migrate to, its own
# root key prefix) migrated into the fake; its keys become kms-wrapped with the same addresses.
section() {
  printf '    google-cloud-kms:\n      project_id: hanzo-ai-prod\n      location: global\n      key_ring: hanzo-kms-keyring\n      credentials: %s\n      endpoint: %s\n      key_prefix: "mig-"\n' \
    "$work/fake/credentials.json" "$endpoint"
}
printf 'kms:\n  lux:\n    provider: software\n' > "$work/sw.yaml"; section >> "$work/sw.yaml"
printf 'kms:\n  lux:\n    provider: google-cloud-kms\n' > "$work/mig.yaml"; section >> "$work/mig.yaml"
kms_at "$work/sw.yaml" "$work/sw" init > /dev/null
kms_at "$work/sw.yaml" "$work/sw" keyspace create --customer acme --model gpt4 > /dev/null
before=$(kms_at "$work/sw.yaml" "$work/sw" --json keys show poai:acme:gpt4 | json 'd["versions"][-1]["address"]')
kms_at "$work/sw.yaml" "$work/sw" model encrypt --model acme:gpt4 --in "$work/weights.bin" --out "$work/sw.enc" > /dev/null
kms_at "$work/sw.yaml" "$work/sw" keys migrate --to google-cloud-kms --revoke-tokens > /dev/null
for k in model:acme:gpt4 poai:acme:gpt4 hmm:acme:gpt4; do
  expect "$(kms_at "$work/mig.yaml" "$work/sw" --json keys show "$k" | json 'd["provider"]')" google-cloud-kms "$k provider after migrate"
  expect "$(kms_at "$work/mig.yaml" "$work/sw" --json keys show "$k" | json 'd["origin"]')" kms-wrapped "$k origin after migrate"
done
expect "$(kms_at "$work/mig.yaml" "$work/sw" --json keys show poai:acme:gpt4 | json 'd["versions"][-1]["address"]')" "$before" "migrated poai address"
kms_at "$work/mig.yaml" "$work/sw" model decrypt --model acme:gpt4 --in "$work/sw.enc" --out "$work/sw.dec" > /dev/null
cmp "$work/weights.bin" "$work/sw.dec"
sign_and_check "$work/mig.yaml" "$work/sw" migrated
[ -n "$(keys_like mig-root-kek)" ] || { echo "test-gcp: no root key mig-root-kek at the fake" >&2; exit 1; }
echo "test-gcp: keys migrate --to google-cloud-kms (software -> fake, kms-wrapped, same addresses): ok"

# Back the migrated store up and restore it into a fresh software store.
printf 'correct horse battery staple gcp\n' > "$work/pass"
kms_at "$work/mig.yaml" "$work/sw" backup create --out "$work/gcp.bundle" --passphrase-file "$work/pass" > /dev/null
printf 'kms:\n  lux:\n    provider: software\n' > "$work/restored.yaml"
kms_at "$work/restored.yaml" "$work/restored" init > /dev/null
kms_at "$work/restored.yaml" "$work/restored" backup restore --in "$work/gcp.bundle" --passphrase-file "$work/pass" > /dev/null
expect "$(kms_at "$work/restored.yaml" "$work/restored" --json keys show poai:acme:gpt4 | json 'd["versions"][-1]["address"]')" "$before" "restored poai address"
expect "$(kms_at "$work/restored.yaml" "$work/restored" --json keys show model:acme:gpt4 | json 'd["provider"]')" software "restored model key provider"
kms_at "$work/restored.yaml" "$work/restored" model decrypt --model acme:gpt4 --in "$work/sw.enc" --out "$work/r.dec" > /dev/null
cmp "$work/weights.bin" "$work/r.dec"
sign_and_check "$work/restored.yaml" "$work/restored" restored
echo "test-gcp: backup create on Google Cloud KMS (fake) and restore into software: ok"
