#!/usr/bin/env bash
# Regenerates fixtures/golden/*.txt (text, no colour) and *.jsonl (JSON lines)
# from every fixture, with the release binary. Review the diff before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/make_fixtures.py
cargo build --quiet --release
bin=target/release/kinetid-wsdump
mkdir -p fixtures/golden
for f in fixtures/*.hex; do
  name=$(basename "$f" .hex)
  "$bin" replay --color never "$f" > "fixtures/golden/$name.txt" || true
  "$bin" replay --format json "$f" > "fixtures/golden/$name.jsonl" || true
done
echo "golden outputs written to fixtures/golden/"
