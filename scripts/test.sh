#!/usr/bin/env bash
# Runs every test of Hanzo KMS. Works on a fresh Debian machine with only Rust installed:
# missing Debian packages are installed when run as root, and named otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need. (The software provider and SQLite need none beyond a C
# compiler; later providers add softhsm2, opensc and postgresql here.)
PACKAGES=(gcc)
# Programs that tell whether each package is present.
PROGRAMS=(cc)

missing=()
for i in "${!PACKAGES[@]}"; do
  command -v "${PROGRAMS[$i]}" >/dev/null 2>&1 || missing+=("${PACKAGES[$i]}")
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

# Doc tests first (cargo test --all-targets skips them), then every unit and integration test.
cargo test --workspace --doc --locked
cargo test --workspace --all-targets --locked "$@"
