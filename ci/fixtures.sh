#!/usr/bin/env bash
# The committed fixtures are exactly what their generator writes.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 fixtures/generate.py --check
