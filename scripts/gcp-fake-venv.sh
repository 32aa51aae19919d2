#!/usr/bin/env bash
# Makes target/gcp-venv: a Python virtualenv with the `cryptography` package (from PyPI) that
# scripts/fake_gcp_kms.py, the FAKE Google Cloud KMS server, needs. Prints the interpreter path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CARGO_TARGET_DIR:-target}/gcp-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import cryptography" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check cryptography >&2
fi
echo "$(cd "$venv" && pwd)/bin/python"
