#!/usr/bin/env bash
# The on-chain part (contracts/, docs/onchain.md): compiles the Solidity contracts with the pinned
# solcjs and runs their tests on a real EVM (@ethereumjs/vm) against signatures made by the
# hanzo-kms binary, with software keys and with keys in a SoftHSM2 token. Everything comes from
# npm through contracts/package-lock.json. scripts/test.sh runs this after its cargo build; alone:
#   cargo build -p hanzo-kms-cli && scripts/test-contracts.sh
# HANZO_KMS_BIN names another binary; HANZO_CONTRACTS_SEED replays a property-test run.
# `scripts/test-contracts.sh --prepare` only installs the npm packages (scripts/test.sh, during its build).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "scripts/test-contracts.sh: $tool not found; install Node.js 20 or later (with npm)" >&2; exit 1; }
done
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "scripts/test-contracts.sh: Node.js $major is too old; 20 or later is needed" >&2; exit 1; }
prepare=false
[ "${1:-}" = --prepare ] && prepare=true
export HANZO_KMS_BIN=${HANZO_KMS_BIN:-$repo/target/debug/hanzo-kms}
$prepare || [ -x "$HANZO_KMS_BIN" ] || { echo "scripts/test-contracts.sh: $HANZO_KMS_BIN is missing; build it with: cargo build -p hanzo-kms-cli" >&2; exit 1; }
$prepare || command -v softhsm2-util >/dev/null 2>&1 || { echo "scripts/test-contracts.sh: softhsm2-util not found; install it with: apt-get install -y softhsm2" >&2; exit 1; }

cd contracts
# npm ci installs exactly the lock file (solc, OpenZeppelin, the EVM, ethers); skipped while the
# installed tree was made from this very lock file.
stamp=node_modules/.installed-from-lock
if [ ! -f "$stamp" ] || ! cmp -s "$stamp" package-lock.json; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
$prepare && exit 0
node scripts/build.mjs
node --test --test-reporter=spec test/*.test.mjs
