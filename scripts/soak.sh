#!/usr/bin/env bash
# A soak of listen, two proxies and churning fleets together (127.0.0.1
# only): every minute descriptors, RSS, tasks, reports and switch round
# trips; at the end "nothing lost" by (dev, seq) and "nothing held", and a
# verdict line. See scripts/soak.py for what runs.
#
# Usage: bash scripts/soak.sh DURATION [PLUGS] [EVERY]
#   DURATION  seconds (or 30m, 2h); CI runs 60
#   PLUGS     steady plugs (default 40)
#   EVERY     seconds between report lines (default 60; 15 when DURATION < 300)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:?usage: soak.sh DURATION [PLUGS] [EVERY]}
case "$dur" in
  *h) dur=$(( ${dur%h} * 3600 )) ;;
  *m) dur=$(( ${dur%m} * 60 )) ;;
  *s) dur=${dur%s} ;;
esac
plugs=${2:-40}
every=${3:-$([ "$dur" -lt 300 ] && echo 15 || echo 60)}
cargo build --release --quiet
exec python3 scripts/soak.py target/release/kinetid-wsdump "$dur" --plugs "$plugs" --every "$every"
