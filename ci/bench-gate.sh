#!/usr/bin/env bash
# The performance gate: instruction counts of the CPU workloads (valgrind) against
# benches/baselines/ir.json, and the embedded backend's journey latency as a ratio to the
# minimal server against benches/baselines/journey.json. Exit 1 on a regression or a missing
# baseline.
#
#   ci/bench-gate.sh            # compare (what CI runs)
#   ci/bench-gate.sh --update   # refresh both baselines; commit them with the change
#   ci/bench-gate.sh --prove    # five unchanged runs must pass, a deliberate slowdown must fail
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "bench-gate: valgrind is required (apt-get install valgrind)"; exit 2; }
cargo build --release --locked -p apex-benches --bin bench-gate
gate=target/release/bench-gate
case "${1:-}" in
  --update)
    "$gate" ir --update
    "$gate" journey --update
    ;;
  --prove)
    for i in 1 2 3 4 5; do
      echo "== unchanged run $i"
      "$gate" ir
      "$gate" journey
    done
    echo "== deliberate 10 % slowdown of every counted workload, the journey included: the gate must fail"
    if "$gate" ir --slowdown 10; then echo "bench-gate: a 10 % slowdown passed the Ir gate"; exit 1; fi
    echo "== deliberate 100 % slowdown (waiting) of the backend's journey: the tripwire must fail"
    if "$gate" journey --slowdown 100; then echo "bench-gate: a doubled journey passed the journey gate"; exit 1; fi
    echo "bench-gate proof: 5/5 unchanged runs passed, both slowdowns failed"
    ;;
  "")
    "$gate" ir
    "$gate" journey
    ;;
  *) echo "usage: ci/bench-gate.sh [--update|--prove]"; exit 2 ;;
esac
