#!/usr/bin/env bash
# Loads `kinetid-wsdump listen` with an emulated fleet on loopback and reports
# connections held, reports per second, the listener's memory per connection,
# the emulator's per plug and both processes' CPU. OUTPUT text keeps the
# listener's defaults (the inspector's and the device history); quiet keeps
# none. Bounded in time: every run ends by itself.
#
# Usage: bash scripts/bench-fleet.sh [COUNT] [INTERVAL] [SECONDS] [OUTPUT]
#   COUNT     plugs (default 1000)           INTERVAL  report period (default 1s)
#   SECONDS   measured time (default 20)     OUTPUT    quiet | text | json (default quiet)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-1000}; INTERVAL=${2:-1s}; SECS=${3:-20}; OUTPUT=${4:-quiet}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --quiet --bin kinetid-wsdump
BIN=target/release/kinetid-wsdump
TMP=$(mktemp -d); trap 'kill $LPID 2>/dev/null || true; rm -rf "$TMP"' EXIT
case "$OUTPUT" in
  quiet) LFLAGS=(--quiet) ;;
  text) LFLAGS=(--format text --color never) ;;
  json) LFLAGS=(--format json) ;;
  *) echo "OUTPUT is quiet, text or json" >&2; exit 2 ;;
esac
"$BIN" listen --bind 127.0.0.1:0 --no-console "${LFLAGS[@]}" > "$TMP/listen.out" 2> "$TMP/listen.err" &
LPID=$!
for _ in $(seq 100); do grep -q "listening on" "$TMP/listen.err" 2>/dev/null && break; sleep 0.05; done
ADDR=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$TMP/listen.err" | head -1)
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, clock ticks
HZ=$(getconf CLK_TCK)
RSS0=$(rss $LPID)
RAMP=$(( COUNT / 500 + 1 ))s
"$BIN" emulate-device --url "ws://$ADDR/ws" --count "$COUNT" --interval "$INTERVAL" --ramp "$RAMP" \
    --duration "$(( SECS + ${RAMP%s} + 6 ))s" --stats-json "$TMP/stats.json" > /dev/null 2> "$TMP/emu.err" &
EPID=$!
sleep "$(( ${RAMP%s} + 2 ))"
L0=$(cpu $LPID); E0=$(cpu $EPID); T0=$(date +%s.%N)
ACK0=$(grep -c . /dev/null || true)
sleep "$SECS"
L1=$(cpu $LPID); E1=$(cpu $EPID); T1=$(date +%s.%N)
RSS1=$(rss $LPID)
ERSS=$(rss $EPID)
CONNS=$(ls /proc/$LPID/fd | wc -l)
wait $EPID || true
kill -INT $LPID; wait $LPID || true
python3 - "$TMP/stats.json" "$TMP/listen.err" <<PY
import json, sys, re
s = json.load(open(sys.argv[1]))
err = open(sys.argv[2]).read()
m = re.search(r"(\d+) connections \((\d+) refused\), (\d+) frames in, (\d+) frames out, (\d+) messages in", err)
wall = $T1 - $T0
total = ${SECS} + ${RAMP%s} + 6
print(f"plugs {$COUNT}, interval $INTERVAL, listener output: $OUTPUT, measured {wall:.1f} s")
print(f"connections accepted {m.group(1)}, refused {m.group(2)}; sockets open in the listener at the end of the window: {$CONNS}")
print(f"reports sent {s['reports_sent']}, acked {s['reports_acked']}, errors {s['errors']}, reconnects {s['reconnects']}")
print(f"listener messages in {m.group(5)} over the whole run (~{int(m.group(5))/total:.0f}/s)")
print(f"listener RSS {${RSS0}/1024:.1f} MiB idle -> {${RSS1}/1024:.1f} MiB with {$COUNT} plugs: {(${RSS1}-${RSS0})/$COUNT:.1f} KiB per connection")
print(f"emulator RSS {${ERSS}/1024:.1f} MiB: {${ERSS}/$COUNT:.1f} KiB a plug (whole process)")
print(f"CPU over the window: listener {($L1-$L0)/$HZ/wall*100:.0f} %, emulator {($E1-$E0)/$HZ/wall*100:.0f} % (of one core)")
PY
