#!/usr/bin/env bash
# A single-machine rehearsal of a sharded fleet: N `emulate-device --shard K/N`
# processes (one seed) against one `listen --quiet` on loopback, their
# /metrics scraped and summed, and the listener's device table checked for
# distinct ids. Usage: bash scripts/fleet-shards.sh [N] [PLUGS_PER_SHARD] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4}
PER=${2:-250}
SECS=${3:-20}
cargo build --release --quiet
bin=target/release/kinetid-wsdump
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

lport=$(port)
"$bin" listen --bind "127.0.0.1:$lport" --quiet --no-console --max-connections $((N * PER + 100)) 2>"$tmp/listen.err" &
pids+=($!)
sleep 0.5
mports=()
for ((k = 0; k < N; k++)); do
  mp=$(port)
  mports+=("$mp")
  "$bin" emulate-device --url "ws://127.0.0.1:$lport/ws" --count "$PER" --shard "$k/$N" --seed 20261125 \
    --interval 1s --ramp 5s --duration "${SECS}s" --metrics-bind "127.0.0.1:$mp" 2>"$tmp/shard$k.err" &
  pids+=($!)
done
sleep $((SECS - 3))

sum() { # metric name -> sum over the shards
  local total=0 v
  for mp in "${mports[@]}"; do
    v=$(curl -s "http://127.0.0.1:$mp/metrics" | awk -v m="$1" '$1 == m { print $2 }')
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
printf '%-45s %s\n' "shards" "$N x $PER plugs"
for m in plugs_connected connects_total reconnects_total reports_sent_total reports_acked_total errors_total resend_queue_depth; do
  printf '%-45s %s\n' "sum kinetid_wsdump_emulator_$m" "$(sum "kinetid_wsdump_emulator_$m")"
done
curl -s "http://127.0.0.1:$lport/api/devices" > "$tmp/devices.json"
python3 - "$tmp/devices.json" "$((N * PER))" <<'PY'
import json, sys
devs = json.load(open(sys.argv[1]))
ids = [d["id"] for d in devs if d["online"]]
want = int(sys.argv[2])
print(f"{'listen: devices online':45} {len(ids)}")
print(f"{'listen: distinct ids':45} {len(set(ids))}")
print(f"{'listen: reports accepted (sum over devices)':45} {sum(d['reports'] for d in devs)}")
sys.exit(0 if len(set(ids)) == len(ids) == want else 1)
PY
curl -s "http://127.0.0.1:$lport/metrics" | awk '$1 ~ /^kinetid_wsdump_(reports_received_total|acks_sent_total|devices_online)$/ { printf "%-45s %s\n", "listen: " $1, $2 }'
