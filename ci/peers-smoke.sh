#!/usr/bin/env bash
# benches/peers/compare.sh on 50 journeys, without k6 unless it is already installed, so the
# comparison cannot rot: every client must verify every journey against the minimal server.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v k6 >/dev/null; then k6=on; else k6=off; fi
N=50 C=5 K6="$k6" bash benches/peers/compare.sh
