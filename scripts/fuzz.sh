#!/usr/bin/env bash
# Fuzz every parser of outside input for a short while each (docs/fuzzing.md lists the targets and
# records one long run of each).
# Usage: scripts/fuzz.sh [--dev] [SECONDS_PER_TARGET [TARGET...]]   (default 15 s, every target)
#   --dev  an unoptimised build (`cargo fuzz build --dev`): a cold build takes about half as long,
#          the runs execute fewer inputs per second. CI's smoke runs use it; long runs do not.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
if [ "${1:-}" = --dev ]; then
  profile=(--dev)
  shift
fi
secs="${1:-15}"

if ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
  else
    echo "scripts/fuzz.sh: libFuzzer needs g++; install it with: sudo apt-get install -y g++" >&2
    exit 1
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi

shift || true
targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
  targets=(header segments signed_json config rest_body grpc backup tokens pkcs11_handle audit_record audit_archive aws_credentials)
fi

cd fuzz
# One build of every target first (they share their dependencies), then the runs.
cargo fuzz build "${profile[@]}" -s none 2>&1 | tail -n 1
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${secs}s"
  # -s none: no sanitizer, so stable Rust suffices. A crash fails the run and leaves the input
  # under fuzz/artifacts/$target/ (pipefail makes this loop fail with it).
  cargo fuzz run "${profile[@]}" -s none "$target" -- -max_total_time="$secs" -print_final_stats=1 2>&1 | tail -n 3
done
