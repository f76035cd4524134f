#!/usr/bin/env bash
# One `listen --quiet` carrying a large emulated fleet, each plug reporting
# every INTERVAL, while switch commands go through the REST API: are all
# reports acknowledged, what does a switch's round trip cost under that load
# (p50, p99), how much CPU (over both cores) and memory does the listener use.
# Loopback only; every run ends by itself.
#
# Usage: bash scripts/bench-scale.sh [PLUGS] [INTERVAL] [SECONDS] [SWITCHES] [SPREAD]
#   PLUGS     emulated plugs (default 19000: the file-descriptor limit here is 20000)
#   INTERVAL  report period of each plug (default 1s)
#   SECONDS   measured window once all are connected (default 30)
#   SWITCHES  switch commands sent through the API in that window (default 500)
#   SPREAD    emulate-device --spread: 0s (default) puts every report on the
#             period boundary as the contract says (one burst a period);
#             1s spreads them as firmware with jitter would
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGS=${1:-19000}; INTERVAL=${2:-1s}; SECS=${3:-30}; SWITCHES=${4:-500}; SPREAD=${5:-0s}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -le "$PLUGS" ]; then
  echo "the file-descriptor limit ($(ulimit -n)) is below $PLUGS plugs + the listener's own" >&2
  exit 2
fi
# BIN=path measures another build (an older one, to compare in one sitting).
[ -n "${BIN:-}" ] || cargo build --release --quiet --bin kinetid-wsdump
BIN=${BIN:-target/release/kinetid-wsdump}
TMP=$(mktemp -d)
LPID=""; EPID=""
trap 'kill $EPID $LPID 2>/dev/null || true; rm -rf "$TMP"' EXIT
# Either process ending before its time is the result: say what it said.
died() { for f in listen emu; do echo "--- $f stderr:"; tail -5 "$TMP/$f.err"; done; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" listen --bind "127.0.0.1:$PORT" --quiet --no-console --max-connections $((PLUGS + 500)) \
  > /dev/null 2> "$TMP/listen.err" &
LPID=$!
for _ in $(seq 100); do grep -q "listening on" "$TMP/listen.err" 2>/dev/null && break; sleep 0.05; done
RAMP=$(( PLUGS / 2000 + 2 ))
# The emulator is stopped with SIGINT once measured; its --duration only
# bounds a run whose script died, past the longest wait for the fleet below.
TOTAL=$(( SECS + RAMP + 90 ))
"$BIN" emulate-device --url "ws://127.0.0.1:$PORT/ws" --count "$PLUGS" --interval "$INTERVAL" --spread "$SPREAD" \
  --ramp "${RAMP}s" --duration "${TOTAL}s" --stats-json "$TMP/stats.json" > /dev/null 2> "$TMP/emu.err" &
EPID=$!
if python3 - "$PORT" "$PLUGS" "$SECS" "$SWITCHES" "$LPID" "$EPID" "$RAMP" "$TMP/stats.json" "$TMP/listen.err" <<'PY'
import http.client, json, os, random, statistics, sys, time
port, plugs, secs, switches, lpid, epid, ramp = map(int, sys.argv[1:8])
stats_path, listen_err = sys.argv[8], sys.argv[9]
hz = os.sysconf("SC_CLK_TCK")

def get(path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz

def threads(pid):
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            f = open(f"/proc/{pid}/task/{t}/stat").read()
        except OSError:
            continue
        name = f.split("(", 1)[1].rsplit(")", 1)[0]
        g = f.rsplit(")", 1)[1].split()
        out[t] = (name, (int(g[11]) + int(g[12])) / hz)
    return out

def delivery():
    # The listener's own histogram: a command's request (API or console) to
    # its frame written to the device's socket.
    st, body = get("/metrics")
    b = {}
    for l in body.decode().splitlines():
        if l.startswith("kinetid_wsdump_command_delivery_seconds_bucket{"):
            le = l.split('le="', 1)[1].split('"', 1)[0]
            b[float("inf") if le == "+Inf" else float(le)] = int(float(l.rsplit(" ", 1)[1]))
    return b

def bucket_quantile(b0, b1, p):
    d = sorted((le, b1[le] - b0.get(le, 0)) for le in b1)
    n = d[-1][1] if d else 0
    for le, c in d:
        if n and c >= p * n:
            return le * 1000, n
    return float("nan"), n

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1])

rss0 = rss(lpid)
began = time.time()
deadline = began + ramp + 60
online = 0
while time.time() < deadline:
    st, body = get("/api/devices")
    devs = json.loads(body)
    if isinstance(devs, dict):
        devs = devs.get("devices", [])
    online = sum(1 for d in devs if d.get("online", True))
    if online >= plugs:
        break
    time.sleep(1)
print(f"{online} of {plugs} plugs online after {time.time() - began:.0f} s (ramp {ramp} s)", flush=True)
ids = [d["id"] for d in devs]
time.sleep(2)
d0 = delivery()
c0, e0, t0, th0 = cpu(lpid), cpu(epid), time.time(), threads(lpid)
rtts, failures = [], 0
gap = secs / max(switches, 1)
for i in range(switches):
    dev = random.choice(ids)
    body = json.dumps({"on": i % 2 == 0})
    s = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    c.request("POST", f"/api/devices/{dev}/switch", body, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read(); c.close()
    rtts.append((time.perf_counter() - s) * 1000)
    if r.status != 200:
        failures += 1
    left = t0 + (i + 1) * gap - time.time()
    if left > 0:
        time.sleep(left)
while time.time() < t0 + secs:
    time.sleep(0.2)
c1, e1, t1, th1 = cpu(lpid), cpu(epid), time.time(), threads(lpid)
d1 = delivery()
rss1 = rss(lpid)
wall = t1 - t0
rtts.sort()
q = lambda p: rtts[min(len(rtts) - 1, int(p * len(rtts)))]
print(f"switch round trip through the API under load: {len(rtts)} commands, {failures} failed, "
      f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {rtts[-1]:.2f} ms "
      f"(to the device's state: it includes the emulated plug's own wait in its burst)")
if d1:
    (p50, n), (p99, _) = bucket_quantile(d0, d1, 0.5), bucket_quantile(d0, d1, 0.99)
    print(f"command delivery (request to frame written to the device's socket): {n} commands, "
          f"p50 <= {p50:g} ms, p99 <= {p99:g} ms (the listener's histogram buckets)")
else:
    print("command delivery: this build has no kinetid_wsdump_command_delivery_seconds")
print(f"listener CPU over {wall:.0f} s: {(c1 - c0) / wall * 100:.0f} % (200 % = both cores); "
      f"emulator {(e1 - e0) / wall * 100:.0f} %")
busy = sorted(((th1[t][1] - th0.get(t, (0, 0))[1]) / wall * 100, th1[t][0]) for t in th1)[::-1]
print("listener threads: " + ", ".join(f"{n} {p:.0f} %" for p, n in busy[:4]))
print(f"listener RSS {rss0 / 1024:.1f} MiB idle -> {rss1 / 1024:.1f} MiB with {plugs} plugs: "
      f"{(rss1 - rss0) / plugs:.1f} KiB per device")
os.kill(epid, 2)
for _ in range(100):
    if os.path.exists(stats_path) and os.path.getsize(stats_path) > 0:
        break
    time.sleep(0.2)
time.sleep(1)
s = json.load(open(stats_path))
print(f"reports sent {s['reports_sent']}, acked {s['reports_acked']}, errors {s['errors']}, "
      f"reconnects {s['reconnects']}")
PY
then :; else died; exit 1; fi
wait "$EPID" 2>/dev/null || true
kill -INT "$LPID"; wait "$LPID" 2>/dev/null || true
grep -E "connections \(" "$TMP/listen.err" | tail -1 || true
