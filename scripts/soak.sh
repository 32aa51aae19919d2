#!/usr/bin/env bash
# A soak at full load with audit retention: one `hanzo-kms serve` on SQLite (release build),
# driven by `hanzo-kms-bench server` (every REST and gRPC figure, one after the other, again and
# again) for MINUTES, with `audit.retention_secs` = RETENTION and an archive directory, and
# PoAI attestations that expire after ATTESTATION_TTL seconds (so that their replay records
# reach their steady state too). Every 30 s it samples the store's files, the archives and the
# server's RSS; at the end it stops the server, checks its log, and verifies the store with its
# archives (docs/benchmarks.md, "The soak").
#
#   scripts/soak.sh [MINUTES] [RETENTION_SECS] [ATTESTATION_TTL] [OUT_DIR]
#
# Defaults: 60 minutes, a retention of 3,600 s, attestations for 300 s, target/soak. OUT_DIR gets
# samples.tsv, serve.err (the server's log), bench.out and summary.txt; the store and the archives
# stay in OUT_DIR/data and OUT_DIR/archives for a look afterwards (several GB at full load).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-60}
retention=${2:-3600}
ttl=${3:-300}
out=${4:-target/soak}

cargo build --release --locked -p hanzo-kms-cli -p hanzo-kms-bench --quiet
kms=$PWD/target/release/hanzo-kms
bench=$PWD/target/release/hanzo-kms-bench

rm -rf "$out"
mkdir -p "$out/archives"
out=$(cd "$out" && pwd)
data=$out/data
cat > "$out/soak.yaml" <<EOF
kms:
  hanzo:
    poai_signing:
      attestation_ttl: $ttl
storage:
  replay_grace_secs: 60
audit:
  checkpoint_interval_secs: 60
  retention_secs: $retention
  archive_dir: $out/archives
rate_limits:
  per_tenant: {per_second: 1000000, burst: 1000000, per_day: 4000000000}
EOF

pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT
# At info, the log has the scheduler's archive and prune passes too.
HANZO_KMS_LOG=info "$kms" --data-dir "$data" --config "$out/soak.yaml" --json serve \
  --rest-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 > "$out/serve.out" 2> "$out/serve.err" &
pid=$!
for _ in $(seq 400); do grep -q '"rest"' "$out/serve.out" 2>/dev/null && break; sleep 0.05; done
read -r rest grpc < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue  # the admin token note, for people
    if isinstance(v, dict) and "rest" in v:
        print(v["rest"], v.get("grpc") or "")
        break' "$out/serve.out")
[ -n "$rest" ] || { echo "soak: the server did not start" >&2; cat "$out/serve.err" >&2; exit 1; }

sample() {
  local size
  size() { stat -c %s "$1" 2>/dev/null || echo 0; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%H:%M:%S)" \
    "$(size "$data/kms.db")" "$(size "$data/kms.db-wal")" \
    "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)" \
    "$(find "$out/archives" -name '*.jsonl' | wc -l)" \
    "$(du -sb "$out/archives" | cut -f1)"
}
printf 'time\tdb_bytes\twal_bytes\trss_kib\tarchives\tarchive_bytes\n' > "$out/samples.tsv"
(while kill -0 "$pid" 2>/dev/null; do sample >> "$out/samples.tsv"; sleep 30; done) &
sampler=$!

end=$(( $(date +%s) + minutes * 60 ))
rounds=0
while [ "$(date +%s)" -lt "$end" ]; do
  left=$(( end - $(date +%s) ))
  secs=$(( left < 60 ? (left > 5 ? left / 4 : 1) : 60 ))
  "$bench" server --url "$rest" ${grpc:+--grpc-url "$grpc"} --token-file "$data/admin.token" \
    --seconds "$secs" >> "$out/bench.out" 2>&1 || echo "soak: a bench round failed" >> "$out/bench.out"
  rounds=$((rounds + 1))
done
sample >> "$out/samples.tsv"
kill -TERM "$pid"
wait "$pid" || true
pid=
kill "$sampler" 2>/dev/null || true

verify=$("$kms" --data-dir "$data" --config "$out/soak.yaml" --json audit verify \
  --archive "$out"/archives/*.jsonl 2>&1 || true)
{
  echo "soak: $minutes min, retention ${retention} s, attestation_ttl ${ttl} s, $rounds bench rounds"
  echo "first sample: $(sed -n 2p "$out/samples.tsv")"
  echo "last sample:  $(tail -1 "$out/samples.tsv")"
  echo "max db bytes: $(awk -F'\t' 'NR > 1 && $2 > m {m = $2} END {print m}' "$out/samples.tsv")"
  echo "rss kib (min/max after the first 5 minutes): $(awk -F'\t' 'NR > 11 && $4 > 0 {if (!n || $4 < a) a = $4; if ($4 > b) b = $4; n++} END {print a "/" b}' "$out/samples.tsv")"
  echo "max wal bytes: $(awk -F'\t' 'NR > 1 && $3 > m {m = $3} END {print m}' "$out/samples.tsv")"
  echo "server log lines at WARN or ERROR: $(grep -cE ' (WARN|ERROR) ' "$out/serve.err" || true)"
  echo "bench rounds that failed: $(grep -c 'soak: a bench round failed' "$out/bench.out" || true)"
  echo "scheduler archive passes: $(grep -c 'archived and pruned' "$out/serve.err" || true) ($(find "$out/archives" -name '*.jsonl' | wc -l) archives)"
  echo "audit verify --archive: $verify"
} | tee "$out/summary.txt"
