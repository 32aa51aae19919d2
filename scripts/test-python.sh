#!/usr/bin/env bash
# The Python package (python/): fmt, clippy and rustdoc of its Rust half, a wheel built with
# maturin (from PyPI, into a virtualenv under target/), and its pytest suite against a real
# `hanzo-kms serve` on loopback, run with target/debug/hanzo-kms (scripts/test.sh builds it first;
# run alone, this script builds it).
#
# The extension is its own Cargo workspace (python/Cargo.toml says why) built into the root's
# target/ directory, so the dependencies it shares with the workspace are compiled once. The
# wheel is a debug build: CI tests behaviour; docs/benchmarks.md measures a release build.
#
# Usage: scripts/test-python.sh [pytest args...]
#        scripts/test-python.sh --prepare   only make the virtualenv (scripts/test.sh, during its build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="$PWD/target"
started=$(date +%s)

if ! python3 -m venv --help >/dev/null 2>&1; then
  echo "scripts/test-python.sh: python3 venv is missing; install it with: sudo apt-get install -y python3-venv" >&2
  exit 1
fi
# strace lists the files a load opens for writing (tests/test_no_plaintext.py); openssl makes the
# certificates of tests/test_tls.py.
missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "scripts/test-python.sh: ${missing[*]} missing (sudo apt-get install -y ${missing[*]}); the tests that need them skip" >&2
  fi
fi

venv=target/python-venv
# The test dependencies, at versions known to work together (torch is left out: the registry's
# wheel is the CUDA build, several GB; tests/test_torch.py skips without it).
PIP_PACKAGES=("maturin>=1.9.4,<2" "pytest>=8,<10" "numpy>=2,<3" "ml_dtypes>=0.5,<1" "safetensors>=0.6,<1")
if [ ! -x "$venv/bin/maturin" ] || ! "$venv/bin/python" -c "import pytest, numpy, ml_dtypes, safetensors" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi
[ "${1:-}" = --prepare ] && exit 0

[ -x target/debug/hanzo-kms ] || cargo build -p hanzo-kms-cli --bin hanzo-kms --locked

manifest=python/Cargo.toml
cargo fmt --manifest-path "$manifest" -- --check
PYO3_PYTHON="$PWD/$venv/bin/python" cargo clippy --manifest-path "$manifest" --all-targets --locked -- -D warnings
PYO3_PYTHON="$PWD/$venv/bin/python" RUSTDOCFLAGS="-D warnings" cargo doc --manifest-path "$manifest" --no-deps --locked

rm -rf target/python-wheels
"$venv/bin/maturin" build --quiet --manifest-path "$manifest" --locked --interpreter "$venv/bin/python" \
  --out target/python-wheels
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps target/python-wheels/hanzo_kms-*.whl

# From python/tests, so that `import hanzo_kms` is the installed wheel, not the source folder.
(cd python/tests && HANZO_KMS_BIN="$PWD/../../target/debug/hanzo-kms" "../../$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" .)
echo "scripts/test-python.sh: done in $(( $(date +%s) - started )) s"
