#!/usr/bin/env bash
# Two `hanzo-kms` builds side by side on one PostgreSQL, one node each on a database of its own,
# driven in turn by this tree's `hanzo-kms-bench server` (PoAI sign, 1 KiB encrypt, HMM
# settlement; 16 connections, no rate): a before/after of a change to the PostgreSQL path on the
# same machine and the same database server, alternating so that drift shows.
#
#   scripts/bench-pg-ab.sh BEFORE_BIN AFTER_BIN [ROUNDS] [SECONDS_PER_FIGURE]   (3 rounds, 5 s)
#
# Needs Debian's postgresql (initdb, pg_ctl, psql) and a release build of hanzo-kms-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
before=$1 after=$2 rounds=${3:-3} secs=${4:-5}
for b in "$before" "$after"; do [ -x "$b" ] || { echo "bench-pg-ab: $b is not an executable" >&2; exit 2; }; done
. scripts/pg-local.sh bench-pg-ab
cargo build --release --locked -p hanzo-kms-bench --quiet
bench=$PWD/target/release/hanzo-kms-bench
pg_start

# serve NAME BIN: a node on database NAME; not in $( … ), so that its pid reaches `pids`.
serve() {
  pg_createdb "$1"
  printf 'storage:\n  url: postgres://kms@127.0.0.1:%s/%s\n' "$port" "$1" > "$work/$1.yaml"
  "$2" --data-dir "$work/$1" --config "$work/$1.yaml" --json serve --rest-addr 127.0.0.1:0 \
    --grpc-addr off > "$work/$1.out" 2> "$work/$1.err" &
  pids+=($!)
  for _ in $(seq 200); do grep -q '"rest"' "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
}
url() {
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if isinstance(v, dict) and "rest" in v:
        print(v["rest"])
        break' "$work/$1.out"
}
serve before "$before"
serve after "$after"
for i in $(seq "$rounds"); do
  for n in before after; do
    echo "== $n, round $i"
    "$bench" server --url "$(url $n)" --token "$(cat "$work/$n/admin.token")" \
      --seconds "$secs" --concurrency 16 --rate 0 || echo "bench-pg-ab: the $n round failed"
  done
done
