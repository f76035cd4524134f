#!/usr/bin/env bash
# Installs the third-party peers the integration tests talk to:
#   Python's `websockets` (a WebSocket client nobody here wrote) into a venv
#   under target/, Debian's chromium for the browser tests, Debian's
#   prometheus for promtool and Debian's tshark (the pcap tests compare its
#   WebSocket dissection with ours), and the client stacks of tests/stacks.rs
#   (Node's ws, gorilla/websocket, libwebsockets).
# Idempotent. A test whose peer is missing skips with a printed reason, and
# fails instead when CI=true (so CI never passes without its real peers).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=target/peers-venv
# junitparser: a JUnit XML reader nobody here wrote, for certify's --junit.
# kubernetes-validate: checks deploy/kubernetes against the Kubernetes schemas.
# websocket-client and aiohttp: two more client stacks nobody here wrote,
# played as Kinetid devices against listen (no note on a correct exchange).
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import websockets, junitparser, kubernetes_validate, websocket, aiohttp' 2>/dev/null; then
  { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } && "$VENV/bin/pip" install -q "websockets>=13" "junitparser>=3" "kubernetes-validate>=1.30" "websocket-client>=1.8" "aiohttp>=3.9" || echo "setup-peers: could not install the Python peers" >&2
fi
# Debian packages: chromium (browser tests), prometheus (promtool checks
# /metrics), tshark (pcap tests). tshark asks whether non-root users may
# capture: answered no, without a prompt.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
# Client stacks played as Kinetid devices by tests/stacks.rs: Go with
# gorilla/websocket (Debian packages its source), libwebsockets, Node.js.
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -d /usr/share/gocode/src/github.com/gorilla/websocket ] || missing+=(golang-github-gorilla-websocket-dev)
pkg-config --exists libwebsockets 2>/dev/null || missing+=(libwebsockets-dev pkg-config)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq || true
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    for pkg in "${missing[@]}"; do
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null \
        || echo "setup-peers: could not install $pkg" >&2
    done
  else
    echo "setup-peers: ${missing[*]} missing and cannot apt-get install here" >&2
  fi
fi
# Node's ws from the npm registry, and the two compiled device programs.
if [ ! -d target/peers-node/node_modules/ws ] && command -v npm >/dev/null 2>&1; then
  mkdir -p target/peers-node
  (cd target/peers-node && npm install --silent --no-audit --no-fund ws@8) \
    || echo "setup-peers: could not install Node's ws" >&2
fi
mkdir -p target/peers/bin
if command -v go >/dev/null 2>&1 && [ tests/peers/gorilla-device.go -nt target/peers/bin/gorilla-device ]; then
  GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$PWD/target/peers/go-cache" \
    go build -o target/peers/bin/gorilla-device tests/peers/gorilla-device.go \
    || echo "setup-peers: could not build the gorilla/websocket device" >&2
fi
if pkg-config --exists libwebsockets 2>/dev/null && [ tests/peers/lws-device.c -nt target/peers/bin/lws-device ]; then
  # shellcheck disable=SC2046
  cc -O1 -Wall -o target/peers/bin/lws-device tests/peers/lws-device.c $(pkg-config --cflags --libs libwebsockets) \
    || echo "setup-peers: could not build the libwebsockets device" >&2
fi
exit 0
