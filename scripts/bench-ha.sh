#!/usr/bin/env bash
# One, two and three `hanzo-kms serve` nodes on one PostgreSQL against one node on SQLite, in
# the same run: `hanzo-kms-bench server` (PoAI sign, 1 KiB encrypt, HMM settlement) on each
# setup, the connections spread over the nodes.
#
#   scripts/bench-ha.sh [SECONDS_PER_FIGURE] [CONCURRENCY]
#
# HANZO_KMS_BIN names another `hanzo-kms` binary to measure (an older build, for a before/after);
# the load generator is always this tree's `hanzo-kms-bench`.
# Needs Debian's postgresql (initdb, pg_ctl, psql). PostgreSQL runs with its defaults
# (fsync on, synchronous_commit on), like SQLite's synchronous=FULL here: both durable.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
conc=${2:-16}

. scripts/pg-local.sh bench-ha
cargo build --release --locked -p hanzo-kms-cli -p hanzo-kms-bench --quiet
kms=${HANZO_KMS_BIN:-$PWD/target/release/hanzo-kms}
bench=$PWD/target/release/hanzo-kms-bench
pg_start
pg_createdb kms

# serve VAR DIR CONFIG: start a node, wait for its addresses, set VAR to its REST URL. Not run
# in $( … ): the node's pid must reach this shell's `pids`, or the cleanup would leave it running.
serve() {
  "$kms" --data-dir "$2" ${3:+--config "$3"} --json serve --rest-addr 127.0.0.1:0 --grpc-addr off \
    > "$2.out" 2> "$2.err" &
  pids+=($!)
  for _ in $(seq 200); do grep -q '"rest"' "$2.out" 2>/dev/null && break; sleep 0.05; done
  local url
  url=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "rest" in l][0]["rest"])' "$2.out")
  printf -v "$1" '%s' "$url"
}

printf 'storage:\n  url: postgres://kms@127.0.0.1:%s/kms\n' "$port" > "$work/pg.yaml"
serve a "$work/a" "$work/pg.yaml"
for n in b c; do
  mkdir -m 700 "$work/$n"
  install -m 600 "$work/a/master.key" "$work/$n/master.key"
  serve "$n" "$work/$n" "$work/pg.yaml"
done
serve s "$work/s" ""
token=$(cat "$work/a/admin.token")
pgv=$("$pg_bin/postgres" --version)

# The nodes not in a setup stay up but idle: each setup's connections go to its nodes only.
echo "== one node on PostgreSQL ($pgv), $conc connections"
"$bench" server --url "$a" --token "$token" --seconds "$secs" --concurrency "$conc" --rate 0
echo "== two nodes on PostgreSQL, $conc connections spread over both"
"$bench" server --url "$a" --url "$b" --token "$token" \
  --seconds "$secs" --concurrency "$conc" --rate 0
echo "== three nodes on PostgreSQL, $conc connections spread over the three"
"$bench" server --url "$a" --url "$b" --url "$c" --token "$token" \
  --seconds "$secs" --concurrency "$conc" --rate 0
echo "== one node on SQLite (the embedded default), $conc connections"
"$bench" server --url "$s" --token "$(cat "$work/s/admin.token")" \
  --seconds "$secs" --concurrency "$conc" --rate 0
