#!/usr/bin/env bash
# The project's test command: every unit, integration and benchmark-smoke
# test, with the real peers the integration tests need installed first.
# Ends with one line totalling every cargo test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-peers.sh
mkdir -p target
status=0
cargo test --all-targets --no-fail-fast 2>&1 | tee target/test-output.log || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.log | tee target/test-summary.txt
exit "$status"
