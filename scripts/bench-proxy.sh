#!/usr/bin/env bash
# What the proxy costs, in one run: the same load client
# (examples/echo_load.rs) against `listen --echo --quiet` directly, through
# one `proxy --quiet`, and through two proxies with a TLS hop between them
# (proxy --upstream wss:// -> proxy --tls -> listen): messages per second
# and round-trip p50/p99, 100-byte messages, WINDOW in flight (1 measures
# latency, 16 throughput). Loopback only; every run ends by itself.
#
# Usage: bash scripts/bench-proxy.sh [COUNT] [WINDOW]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-20000}; WINDOW=${2:-1}
cargo build --release --quiet --bin kinetid-wsdump --example echo_load
# BIN=path: time another build of the tool (an older one, to compare).
BIN=${BIN:-target/release/kinetid-wsdump}
LOAD=target/release/examples/echo_load
TMP=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
export KINETID_WSDUMP_DATA="$TMP/data"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
PL=$(free_port); PA=$(free_port); PB=$(free_port); PT=$(free_port); PU=$(free_port)
"$BIN" listen --bind "127.0.0.1:$PL" --echo --quiet --no-console 2>/dev/null & PIDS+=($!)
wait_port "$PL"
"$BIN" proxy --upstream "ws://127.0.0.1:$PL" --bind "127.0.0.1:$PA" --quiet --no-console 2>/dev/null & PIDS+=($!)
"$BIN" proxy --tls --upstream "ws://127.0.0.1:$PL" --bind "127.0.0.1:$PT" --quiet 2>/dev/null & PIDS+=($!)
wait_port "$PT"
"$BIN" proxy --upstream "wss://localhost:$PT" --upstream-insecure --bind "127.0.0.1:$PU" --quiet 2>/dev/null & PIDS+=($!)
wait_port "$PA"; wait_port "$PU"
run() { "$LOAD" "$1" "$COUNT" 100 "$WINDOW"; }
row() {
  python3 - "$1" "$2" <<'PY'
import json, sys
d = json.loads(sys.argv[2])
print("| %-40s | %10.0f | %8.0f | %8.0f |" % (sys.argv[1], d["msgs_per_s"], d["rtt_p50_us"], d["rtt_p99_us"]))
PY
}
D=$(run "ws://127.0.0.1:$PL/ws")
P=$(run "ws://127.0.0.1:$PA/ws")
T=$(run "ws://127.0.0.1:$PU/ws")
echo
echo "$COUNT messages of 100 bytes, $WINDOW in flight"
echo
echo "| path                                     |      msg/s | p50 (us) | p99 (us) |"
echo "| ---                                      |        --- |      --- |      --- |"
row "direct to listen --echo" "$D"
row "through proxy (plain)" "$P"
row "through proxy -> wss:// -> proxy --tls" "$T"
