#!/usr/bin/env bash
# replay on packet captures next to tshark on the same file, in one run:
# one line per frame, full per-field text and JSON on a pcap of FRAMES
# WebSocket frames (medians of RUNS runs), then the peak RSS and the time of
# replaying a capture of about GIB GiB (many connections of the same
# session), which must not grow with the file.
#
# Usage: bash scripts/bench-pcap.sh [FRAMES] [RUNS] [GIB]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
FRAMES=${1:-100000}; RUNS=${2:-3}; GIB=${3:-1}
need_tshark
cargo build --release --quiet --bin kinetid-wsdump
BIN=target/release/kinetid-wsdump
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
python3 scripts/gen_session.py "$FRAMES" --pcap "$TMP/s.pcap"

row() { printf '| %-26s | %-22s | %-34s | %7s |\n' "$1" "$2" "$3" "$4"; }
rate() { echo "$FRAMES / $1" | bc -l | awk '{printf "%.0f", $1}'; }

echo "measuring $FRAMES frames ($(du -h "$TMP/s.pcap" | cut -f1) pcap), $RUNS runs a row" >&2
TS=$(median_time tshark -r "$TMP/s.pcap")
OS=$(median_time "$BIN" replay --format summary "$TMP/s.pcap")
TV=$(median_time tshark -r "$TMP/s.pcap" -V)
OV=$(median_time "$BIN" replay --color never "$TMP/s.pcap")
TJ=$(median_time tshark -r "$TMP/s.pcap" -T json)
OJ=$(median_time "$BIN" replay --format json "$TMP/s.pcap")

# A big capture: the session's packets again and again, each copy its own
# connection (another client port), written without Python per packet.
echo "writing a ~${GIB} GiB capture" >&2
python3 - "$TMP/s.pcap" "$TMP/big.pcap" "$GIB" <<'PY'
import struct, sys
src, dst, gib = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = open(src, "rb").read()
head, body = data[:24], data[24:]
# Offsets of the client port in each packet (Ethernet + IPv4 + TCP).
recs, pos = [], 0
while pos < len(body):
    caplen = struct.unpack_from("<I", body, pos + 8)[0]
    recs.append(pos + 16)
    pos += 16 + caplen
copies = max(1, int(gib * (1 << 30) / len(body)))
with open(dst, "wb") as f:
    f.write(head)
    b = bytearray(body)
    for k in range(copies):
        port = 20000 + k
        for r in recs:
            sport = struct.unpack_from("!H", b, r + 34)[0]
            if sport == 8080:
                struct.pack_into("!H", b, r + 36, port)
            else:
                struct.pack_into("!H", b, r + 34, port)
        f.write(b)
PY
BIG=$(du -m "$TMP/big.pcap" | cut -f1)
/usr/bin/time -o "$TMP/time" -f "%e %M" "$BIN" replay --format summary "$TMP/big.pcap" > /dev/null 2>&1
BIGRES=$(tail -1 "$TMP/time")
BIGTIME=${BIGRES% *}; BIGRSS=${BIGRES#* }

echo
echo "kinetid-wsdump $($BIN --version | cut -d' ' -f2) vs $(tshark --version 2>/dev/null | head -1 | cut -d' ' -f1-3); $FRAMES frames; medians of $RUNS runs"
echo
row "work, same pcap" "tshark" "kinetid-wsdump replay" "ratio"
row "---" "---" "---" "---"
row "one line per frame" "${TS} s" "--format summary: ${OS} s ($(rate "$OS") frames/s)" "$(ratio "$TS" "$OS")"
row "full per-field text" "-V: ${TV} s" "${OV} s ($(rate "$OV") frames/s)" "$(ratio "$TV" "$OV")"
row "JSON" "-T json: ${TJ} s" "--format json: ${OJ} s ($(rate "$OJ") frames/s)" "$(ratio "$TJ" "$OJ")"
echo
echo "a ${BIG} MB capture: replayed (--format summary) in ${BIGTIME} s with a peak RSS of $((BIGRSS / 1024)) MiB"
