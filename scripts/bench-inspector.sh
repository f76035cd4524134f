#!/usr/bin/env bash
# Does an open inspector page slow the listener? A fleet reports as fast as
# the machine allows (PLUGS plugs, one report every INTERVAL each) to one
# `listen --quiet`, RUNS times without a browser and RUNS times with headless
# Chromium showing the inspector (alternating, so drift hits both alike).
# Reported: reports acknowledged per second (the listener's throughput, as
# the fleet sees it), and the listener's CPU; medians and the ratio.
# Loopback only; every run ends by itself.
#
# Usage: bash scripts/bench-inspector.sh [PLUGS] [INTERVAL] [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGS=${1:-1000}; INTERVAL=${2:-100ms}; SECS=${3:-20}; RUNS=${4:-3}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
command -v chromium >/dev/null || { echo "chromium is needed (scripts/setup-peers.sh installs it)" >&2; exit 2; }
cargo build --release --quiet --bin kinetid-wsdump
BIN=target/release/kinetid-wsdump
TMP=$(mktemp -d)
PIDS=""
trap 'kill $PIDS 2>/dev/null || true; rm -rf "$TMP"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one() { # $1: page|none; prints "acked_per_s listener_cpu_percent"
  local port lpid epid bpid="" c0 c1
  port=$(free_port)
  "$BIN" listen --bind "127.0.0.1:$port" --quiet --history 5000 --no-console > /dev/null 2> "$TMP/listen.err" &
  lpid=$!; PIDS="$lpid"
  for _ in $(seq 100); do grep -q "listening on" "$TMP/listen.err" 2>/dev/null && break; sleep 0.05; done
  if [ "$1" = page ]; then
    rm -rf "$TMP/profile"
    chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
      --user-data-dir="$TMP/profile" --remote-debugging-port=0 "http://127.0.0.1:$port/" > /dev/null 2>&1 &
    bpid=$!; PIDS="$PIDS $bpid"
    sleep 3
  fi
  local ramp=$(( PLUGS / 1000 + 2 ))
  "$BIN" emulate-device --url "ws://127.0.0.1:$port/ws" --count "$PLUGS" --interval "$INTERVAL" \
    --ramp "${ramp}s" --duration "$(( SECS + ramp + 1 ))s" --stats-json "$TMP/stats.json" > /dev/null 2>&1 &
  epid=$!; PIDS="$PIDS $epid"
  sleep $(( ramp + 1 ))
  c0=$(cpu "$lpid")
  local a0; a0=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^kinetid_wsdump_acks_sent_total/ {print $2}')
  # With the page open: how smooth its drawing stays (animation frames).
  if [ -n "$bpid" ] && [ -x "$PY" ]; then
    "$PY" scripts/cdp_frames.py "$TMP/profile" $(( SECS > 12 ? 10 : SECS - 2 )) >> "$TMP/frames" 2>&1 &
  fi
  sleep "$SECS"
  c1=$(cpu "$lpid")
  local a1; a1=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^kinetid_wsdump_acks_sent_total/ {print $2}')
  wait "$epid" || true
  [ -n "$bpid" ] && { kill "$bpid" 2>/dev/null || true; wait "$bpid" 2>/dev/null || true; }
  kill "$lpid" 2>/dev/null || true; wait "$lpid" 2>/dev/null || true
  local hz; hz=$(getconf CLK_TCK)
  # Times the page was disconnected for falling behind (it then reconnects).
  local drops; drops=$(grep -c "disconnected from /api/events" "$TMP/listen.err" || true)
  echo "$(( (${a1%.*} - ${a0%.*}) / SECS )) $(( (c1 - c0) * 100 / hz / SECS )) $drops"
}

PY=target/peers-venv/bin/python
: > "$TMP/frames"
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$TMP/none"; : > "$TMP/page"
for r in $(seq "$RUNS"); do
  for m in none page; do
    res=$(one "$m")
    echo "run $r, $m: $res (acks/s, listener CPU %, page dropped for falling behind)" >&2
    echo "$res" >> "$TMP/$m"
  done
done
n_a=$(awk '{print $1}' "$TMP/none" | median); p_a=$(awk '{print $1}' "$TMP/page" | median)
n_c=$(awk '{print $2}' "$TMP/none" | median); p_c=$(awk '{print $2}' "$TMP/page" | median)
echo "$PLUGS plugs every $INTERVAL, $SECS s, median of $RUNS:"
echo "  no page:       $n_a reports acknowledged/s, listener CPU $n_c %"
p_d=$(awk '{s += $3} END {print s}' "$TMP/page")
echo "  inspector open: $p_a reports acknowledged/s, listener CPU $p_c % (the page fell behind and was dropped $p_d times over all runs)"
if [ -s "$TMP/frames" ]; then sed 's/^/  page: /' "$TMP/frames"; fi
echo "  throughput with the page open: $(echo "$p_a * 100 / $n_a" | bc -l | awk '{printf "%.1f", $1}') % of without"
