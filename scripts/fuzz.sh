#!/usr/bin/env bash
# Fuzz every parser of outside input for a short while each (docs/fuzzing.md lists the targets and
# records one long run of each).
# Usage: scripts/fuzz.sh [--dev] [--build-only | --run-only] [SECONDS_PER_TARGET [TARGET...]]
#   (default 15 s, every target)
#   --dev         an unoptimised build (as `cargo fuzz build --dev`): a cold build takes about half
#                 as long, the runs execute fewer inputs per second. CI's smoke runs use it; long
#                 runs do not.
#   --build-only  build the targets and stop; --run-only  run targets already built.
#
# No cargo-fuzz needed: the targets are built with plain `cargo build` and the flags cargo-fuzz
# 0.13 passes for `cargo fuzz build -s none` (the same RUSTFLAGS, target triple, profile and target
# directory: the binaries `cargo fuzz` builds, where it puts them; cargo-fuzz 0.13.2 finds this
# build up to date), and each binary is run as `cargo fuzz run` runs it: artifacts under
# fuzz/artifacts/TARGET/, the corpus fuzz/corpus/TARGET/. A crash fails the script and leaves its
# input in that artifacts directory. The runs go one per core (each fuzzer is one thread), each
# still for the full time.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0 build=1 run=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --build-only) run=0 ;;
    --run-only) build=0 ;;
    *) break ;;
  esac
  shift
done
secs="${1:-15}"
shift || true
targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
  targets=(header segments signed_json config rest_body grpc backup tokens pkcs11_handle audit_record audit_archive aws_credentials)
fi

if ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
  else
    echo "scripts/fuzz.sh: libFuzzer needs g++; install it with: sudo apt-get install -y g++" >&2
    exit 1
  fi
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
cd fuzz
if [ "$build" = 1 ]; then
  # cargo-fuzz's flags for `-s none` on Linux: SanitizerCoverage (inline 8-bit counters, the PC
  # table, compare tracing, stack depth), no branch folding, `--cfg fuzzing`, debug assertions.
  # Overflow checks come with the dev profile; the optimised build is cargo-fuzz's default
  # (release, line tables, one codegen unit), which keeps debug assertions only through the flag.
  # An explicit --target keeps these flags away from build scripts and proc macros, as there.
  # No --locked, as with cargo-fuzz: fuzz/Cargo.lock follows the workspace's manifests.
  flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
  flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
  flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
  flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth"
  flags+=" -Cdebug-assertions"
  profile=()
  if [ "$dev" = 0 ]; then
    flags+=" -Ccodegen-units=1"
    profile=(--release --config 'profile.release.debug="line-tables-only"')
  fi
  # As cargo-fuzz does, the caller's RUSTFLAGS come last (they win).
  if [ -n "${RUSTFLAGS:-}" ]; then flags+=" $RUSTFLAGS"; fi
  started=$SECONDS
  mkdir -p target
  if ! RUSTFLAGS="$flags" cargo build --target "$triple" "${profile[@]}" --bins > target/build.log 2>&1; then
    tail -n 60 target/build.log >&2
    echo "scripts/fuzz.sh: the build failed (fuzz/target/build.log)" >&2
    exit 1
  fi
  tail -n 1 target/build.log
  echo "scripts/fuzz.sh: build in $((SECONDS - started)) s" >&2
fi
[ "$run" = 1 ] || exit 0

bin_dir="target/$triple/release"
[ "$dev" = 1 ] && bin_dir="target/$triple/debug"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
jobs=$(nproc 2>/dev/null || echo 1)
pids=() names=()
finish() { # waits for the oldest run, prints its summary; a crash (nonzero exit) fails the script
  local pid=${pids[0]} name=${names[0]} status=0
  pids=("${pids[@]:1}") names=("${names[@]:1}")
  wait "$pid" || status=$?
  echo "== fuzz $name for ${secs}s"
  if [ "$status" = 0 ]; then
    tail -n 3 "$logs/$name.log"
  else
    tail -n 40 "$logs/$name.log"
    echo "scripts/fuzz.sh: $name failed (exit $status); its input is under fuzz/artifacts/$name/" >&2
    failed=1
  fi
}
failed=0
for target in "${targets[@]}"; do
  [ -x "$bin_dir/$target" ] || { echo "scripts/fuzz.sh: $bin_dir/$target is missing: build first" >&2; exit 1; }
  mkdir -p "artifacts/$target" "corpus/$target"
  [ "${#pids[@]}" -lt "$jobs" ] || finish
  "$bin_dir/$target" -artifact_prefix="artifacts/$target/" -max_total_time="$secs" -print_final_stats=1 \
    "corpus/$target" > "$logs/$target.log" 2>&1 &
  pids+=($!) names+=("$target")
done
while [ "${#pids[@]}" -gt 0 ]; do finish; done
exit "$failed"
