#!/usr/bin/env bash
# The project's test command: every unit, integration and doc test, with the
# real peers the integration tests need installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-peers.sh
cargo test --all-targets
