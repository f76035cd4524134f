#!/usr/bin/env bash
# kinetid-wsdump next to tshark and websocat, on the same work, in one run.
#
# Makes its own inputs (scripts/gen_session.py: one Kinetid session of N
# frames as the tool's text capture and as a pcap for tshark), installs the
# peers when missing (Debian's tshark; websocat with `cargo install --root
# target/peers`), uses one load client for both echo servers
# (examples/echo_load.rs, on tokio-tungstenite), runs every row RUNS times
# and prints the medians with the ratios. Loopback only; every run ends by
# itself.
#
# Usage: [CAPTURE=FILE.pcap] bash scripts/bench-peers.sh [FRAMES] [RUNS]
#   FRAMES   frames in the replayed session (default 100000)
#   RUNS     runs per row, the median is shown (default 3)
#   CAPTURE  a pcap made elsewhere, replayed by both tools as well
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
FRAMES=${1:-100000}; RUNS=${2:-3}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

need_tshark
WEBSOCAT=target/peers/bin/websocat
if [ ! -x "$WEBSOCAT" ]; then
  echo "installing websocat under target/peers (a few minutes, once)" >&2
  cargo install websocat --locked --quiet --root target/peers
fi
cargo build --release --quiet --bin kinetid-wsdump --example echo_load
BIN=target/release/kinetid-wsdump
LOAD=target/release/examples/echo_load

TMP=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
python3 scripts/gen_session.py "$FRAMES" --cap "$TMP/s.cap" --pcap "$TMP/s.pcap"

# Peak RSS in KiB of one run.
peak_rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }

row() { printf '| %-38s | %-22s | %-22s | %7s |\n' "$1" "$2" "$3" "$4"; }

# Replay: both tools read the same pcap. CAPTURE=FILE.pcap adds a capture
# made elsewhere (another generator's), measured the same way.
replay_rows() { # PCAP LABEL
  local P=$1 label=$2 bytes TV OV TJ OJ TS OS ON peak
  bytes=$(stat -c %s "$P")
  echo "measuring replay of $label ($((bytes / 1000000)) MB pcap), $RUNS runs a row, in turn" >&2
  t_v() { tshark -r "$P" -V; }; o_v() { "$BIN" replay --color never "$P"; }
  t_j() { tshark -r "$P" -T json; }; o_j() { "$BIN" replay --format json "$P"; }
  t_s() { tshark -r "$P"; }; o_s() { "$BIN" replay --format summary "$P"; }
  o_n() { "$BIN" replay --no-kinetid --format summary "$P"; }
  read -r TV OV <<< "$(median_pair t_v o_v)"
  read -r TJ OJ <<< "$(median_pair t_j o_j)"
  read -r TS OS <<< "$(median_pair t_s o_s)"
  read -r TS2 ON <<< "$(median_pair t_s o_n)"
  peak=$(peak_rss "$BIN" replay --format summary "$P")
  REPLAY_ROWS+=("$(row "$label: full per-field text" "tshark -V: ${TV} s" "replay: ${OV} s" "$(ratio "$TV" "$OV")")")
  REPLAY_ROWS+=("$(row "$label: JSON lines" "tshark -T json: ${TJ} s" "--format json: ${OJ} s" "$(ratio "$TJ" "$OJ")")")
  REPLAY_ROWS+=("$(row "$label: one line per frame" "tshark: ${TS} s" "--format summary: ${OS} s" "$(ratio "$TS" "$OS")")")
  REPLAY_ROWS+=("$(row "$label: frame layer alone (MB/s)" "tshark: ${TS2} s" "--no-kinetid: $(echo "$bytes / $ON / 1000000" | bc -l | awk '{printf "%.0f", $1}') MB/s" "$(ratio "$TS2" "$ON")")")
  REPLAY_ROWS+=("$(row "$label: peak RSS, one line per frame" "" "$((peak / 1024)) MiB" "")")
}
REPLAY_ROWS=()
replay_rows "$TMP/s.pcap" "gen_session.py $FRAMES"
if [ -n "${CAPTURE:-}" ]; then
  replay_rows "$CAPTURE" "$(basename "$CAPTURE")"
fi

# Echo: one client, the same for both servers.
echo_rate() { # URL COUNT SIZE: median messages/s
  local rs=()
  for _ in $(seq "$RUNS"); do
    rs+=("$(timeout 120 "$LOAD" "$1" "$2" "$3" 16 | python3 -c 'import json,sys; print(json.load(sys.stdin)["msgs_per_s"])')")
  done
  printf '%s\n' "${rs[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PO=$(free_port); PW=$(free_port)
"$BIN" listen --bind "127.0.0.1:$PO" --echo --quiet --no-console 2>"$TMP/listen.err" & PIDS+=($!)
"$WEBSOCAT" -b -E "ws-l:127.0.0.1:$PW" mirror: 2>"$TMP/websocat.err" & PIDS+=($!)
wait_port "$PO"; wait_port "$PW"
echo "measuring echo (100-byte and 64 KiB messages, 16 in flight)" >&2
WS=$(echo_rate "ws://127.0.0.1:$PW/" 100000 100)
OE=$(echo_rate "ws://127.0.0.1:$PO/ws" 100000 100)
WB=$(echo_rate "ws://127.0.0.1:$PW/" 5000 65536)
OB=$(echo_rate "ws://127.0.0.1:$PO/ws" 5000 65536)

# Memory: idle device connections, and replaying a capture of ~100 MB.
echo "measuring memory (2000 idle plugs; 10,000 reporting; a ~100 MB capture)" >&2
PK=$(free_port)
"$BIN" listen --bind "127.0.0.1:$PK" --quiet --no-console 2>"$TMP/listen2.err" & LPID=$!; PIDS+=($LPID)
wait_port "$PK"
R0=$(awk '/VmRSS/{print $2}' "/proc/$LPID/status")
"$BIN" emulate-device --url "ws://127.0.0.1:$PK/ws" --count 2000 --interval 1h --ramp 2s --duration 8s >/dev/null 2>"$TMP/emu.err" & EPID=$!; PIDS+=($EPID)
sleep 6
R1=$(awk '/VmRSS/{print $2}' "/proc/$LPID/status")
wait "$EPID" || true
PER_CONN=$(echo "($R1 - $R0) / 2000" | bc -l | awk '{printf "%.1f", $1}')
kill -INT "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true
# Reporting devices: listen with its defaults (the inspector's history and
# the device history kept), 10,000 plugs reporting every second, measured
# after about 12 reports each; the emulator's own RSS per plug in the same
# run (the whole process, divided by the plugs).
PR=$(free_port)
"$BIN" listen --bind "127.0.0.1:$PR" --no-console >/dev/null 2>"$TMP/listen3.err" & LPID=$!; PIDS+=($LPID)
wait_port "$PR"
R0=$(awk '/VmRSS/{print $2}' "/proc/$LPID/status")
"$BIN" emulate-device --url "ws://127.0.0.1:$PR/ws" --count 10000 --interval 1s --ramp 5s --duration 22s >/dev/null 2>"$TMP/emu3.err" & EPID=$!; PIDS+=($EPID)
sleep 18
R1=$(awk '/VmRSS/{print $2}' "/proc/$LPID/status")
E1=$(awk '/VmRSS/{print $2}' "/proc/$EPID/status")
wait "$EPID" || true
kill -INT "$LPID" 2>/dev/null || true
PER_REP=$(echo "($R1 - $R0) / 10000" | bc -l | awk '{printf "%.1f", $1}')
PER_PLUG=$(echo "$E1 / 10000" | bc -l | awk '{printf "%.1f", $1}')
python3 scripts/gen_session.py 420000 --cap "$TMP/big.cap"
BIG_MB=$(du -m "$TMP/big.cap" | cut -f1)
BIG_RSS=$(peak_rss "$BIN" replay --format summary "$TMP/big.cap")

echo
echo "kinetid-wsdump $($BIN --version | cut -d' ' -f2) vs $(tshark --version 2>/dev/null | head -1 | cut -d' ' -f1-3) and $($WEBSOCAT --version); $FRAMES frames; medians of $RUNS runs"
echo
row "work" "peer" "kinetid-wsdump" "ratio"
row "---" "---" "---" "---"
printf '%s\n' "${REPLAY_ROWS[@]}"
row "echo, 100-byte messages (msg/s)" "websocat: ${WS}" "listen --echo: ${OE}" "$(ratio "$OE" "$WS")"
row "echo, 64 KiB messages (msg/s)" "websocat: ${WB}" "listen --echo: ${OB}" "$(ratio "$OB" "$WB")"
row "RSS per idle device connection" "" "${PER_CONN} KiB" ""
row "listen RSS per device, 10,000 reporting" "" "${PER_REP} KiB" ""
row "emulator RSS per plug (whole process)" "" "${PER_PLUG} KiB" ""
row "peak RSS replaying a ${BIG_MB} MB capture" "" "$((BIG_RSS / 1024)) MiB" ""
