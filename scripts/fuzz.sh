#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers with cargo fuzz (libFuzzer).
# Usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Seeds each corpus from fixtures/ on first use. Crashes land in
# fuzz/artifacts/TARGET/; copy each into fuzz/regressions/ so that
# `cargo test` (tests/fuzz_regressions.rs) replays it forever after.
# cargo fuzz needs nightly compiler flags; on a stable toolchain
# RUSTC_BOOTSTRAP=1 allows them.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(request response frames files kinetid inflate pcap machines)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  if [ "$t" = pcap ] && [ -z "$(ls -A "fuzz/corpus/$t")" ]; then
    # Seeds: the synthetic captures of every link type and reassembly case.
    python3 scripts/make_pcaps.py "fuzz/corpus/$t" && rm -f "fuzz/corpus/$t/cases.json"
  fi
  if [ -z "$(ls -A "fuzz/corpus/$t")" ]; then
    for f in fixtures/*.hex; do
      case "$t" in
        files|kinetid) cp "$f" "fuzz/corpus/$t/" ;;
        *) python3 - "$f" "fuzz/corpus/$t/$(basename "$f" .hex)" <<'PY'
import sys
out = bytearray(b"\x01\x07\x03\x1f")  # the frames target reads chunk sizes from 4 leading bytes
text = open(sys.argv[1]).read()
for line in text.splitlines():
    s = line.strip()
    if s.startswith((">", "<")):
        out += bytes.fromhex(s[1:].split("#")[0].replace("0x", "").replace(",", " "))
    elif s and not s.startswith("#"):
        out += (s + "\r\n").encode()
    elif not s:
        out += b"\r\n"
open(sys.argv[2], "wb").write(out)
PY
        ;;
      esac
    done
  fi
  echo "== fuzz $t for $SECS s"
  cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -max_len=4096 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|==|SUMMARY|INFO: -max_total_time)" || true
done
