#!/usr/bin/env bash
# The canary's and compare's own A/A and A/B test, against real apex-backend processes:
#
#   A/A        RUNS canaries of a healthy backend against an identical one   → no rollback
#   think time RUNS canaries against one with --think-time-ms 300            → rollback, p99 > 3 s
#   sabotage   RUNS canaries against one with --sabotage corrupt-numbers     → rollback, quality
#   compare    RUNS pairs of single runs of one build, compare --strict      → at most 1 regression
#
# Scenarios: fixtures/scenarios/canary/ (a golden path with content checks, 2 users × 4
# journeys, and a load of 4 users × 40 journeys, both logging in once per virtual user). The
# think-time canaries run one journey per user and round (--iterations 1): each takes 3 s.
# The backends run embedded (no Postgres or Redis), so the test judges the judge, not the
# services. Prints the counts; exit 1 when any bound is missed or a command fails otherwise.
#
#   ci/canary-selftest.sh                         # what CI runs (20 of each)
#   APEX_SELFTEST_RUNS=50 ci/canary-selftest.sh   # a longer measurement
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${APEX_SELFTEST_RUNS:-20}"
began=$(date +%s)

# The same package selection as ci/bench-gate.sh plus the two binaries: one release build
# serves both scripts.
cargo build --release --locked -p apex-benches --bin bench-gate \
  -p apex-harness --bin apex-harness -p apex-backend --bin apex-backend
bin="${CARGO_TARGET_DIR:-target}/release"
harness="$bin/apex-harness"
scenarios=fixtures/scenarios/canary

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME [apex-backend options]: an embedded backend on a free port, its address in the
# variable NAME. Every canary logs the same fixture users in from 127.0.0.1, several rounds a
# second for minutes: the per-client login allowance (meant for one real client) is raised.
start() {
  local name=$1
  shift
  env -u APEX_DATABASE_URL -u APEX_REDIS_URL -u APEX_REQUIRE_SERVICES -u APEX_SABOTAGE \
    -u APEX_THINK_TIME_MS RUST_LOG=warn \
    "$bin/apex-backend" --listen 127.0.0.1:0 \
    --login-ip-per-sec 10000 --login-ip-burst 10000 "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=("$!")
  for _ in $(seq 300); do
    if grep -q "listening on" "$work/$name.out"; then
      printf -v "$name" '%s' "$(sed -n 's/^listening on //p' "$work/$name.out")"
      return 0
    fi
    sleep 0.1
  done
  echo "canary-selftest: backend $name did not start:" >&2
  cat "$work/$name.err" >&2
  return 1
}

# The A/A pair serves nothing else, so neither has more history (stored runs) than the other.
start a
start b
# The A/B baseline, the sabotaged candidate, and think-time candidates: the think-time
# canaries run together, and every canary logs in as the same virtual users, so each
# think-time backend serves at most 4 of them (a user may have 5 runs at once).
start base
start wrong --sabotage corrupt-numbers --allow-sabotage
slow_backends=$(((runs + 3) / 4))
for k in $(seq "$slow_backends"); do start "slow$k" --think-time-ms 300; done
echo "backends (embedded): A/A $a and $b; baseline $base; corrupt-numbers $wrong;" \
  "$slow_backends with --think-time-ms 300"

# canary NAME BASE CANDIDATE [options]: runs one canary; its exit code is left in NAME.code.
canary() {
  local name=$1 base=$2 cand=$3
  shift 3
  local code=0
  "$harness" canary "$scenarios" --baseline "http://$base" --candidate "http://$cand" "$@" \
    >"$work/$name.txt" 2>"$work/$name.err" || code=$?
  echo "$code" >"$work/$name.code"
}

# The think-time canaries mostly wait (3 s per journey): they run together, in the
# background, while the sabotage canaries run one after the other.
thinking=()
for i in $(seq "$runs"); do
  slow="slow$(((i - 1) % slow_backends + 1))"
  canary "think$i" "$base" "${!slow}" --iterations 1 &
  thinking+=("$!")
  pids+=("$!")
  # Staggered, so the baseline rounds (milliseconds) of different canaries rarely meet.
  sleep 0.3
done
for i in $(seq "$runs"); do
  canary "wrong$i" "$base" "$wrong"
done
wait "${thinking[@]}"

# A/A on a quiet machine, alternating which process is the baseline.
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then canary "aa$i" "$a" "$b"; else canary "aa$i" "$b" "$a"; fi
done

# compare: pairs of single runs of the same build, alternating which runs first.
for i in $(seq "$runs"); do
  first=$a second=$b
  if [ $((i % 2)) -eq 0 ]; then first=$b second=$a; fi
  for side in first second; do
    code=0
    "$harness" run "$scenarios" --target "http://${!side}" --json "$work/pair$i-$side.json" \
      >"$work/pair$i-$side.txt" 2>&1 || code=$?
    if [ "$code" -ne 0 ]; then
      echo "canary-selftest: run $i ($side) exited $code:" >&2
      cat "$work/pair$i-$side.txt" >&2
      exit 1
    fi
  done
  code=0
  "$harness" compare --strict "$work/pair$i-first.json" "$work/pair$i-second.json" \
    >"$work/cmp$i.txt" 2>&1 || code=$?
  echo "$code" >"$work/cmp$i.code"
done

# count PREFIX CODE [PATTERN]: how many runs exited CODE (and printed PATTERN); any exit other
# than 0 and CODE fails the self-test (marked by the file `failed`).
count() {
  local prefix=$1 want=$2 pattern=${3:-} n=0
  for i in $(seq "$runs"); do
    local code
    code=$(cat "$work/$prefix$i.code")
    if [ "$code" != 0 ] && [ "$code" != "$want" ]; then
      echo "canary-selftest: $prefix$i exited $code (expected 0 or $want):" >&2
      cat "$work/$prefix$i".txt "$work/$prefix$i".err >&2 2>/dev/null || true
      touch "$work/failed"
    elif [ "$code" = "$want" ] && { [ -z "$pattern" ] || grep -qE "$pattern" "$work/$prefix$i.txt"; }; then
      n=$((n + 1))
    fi
  done
  echo "$n"
}
# show PREFIX: the first report of that kind, for the log.
show() { echo "--- e.g. $1:"; sed -n '/^rule \|^ROLLBACK\|^PROMOTE\|^REGRESSION\|^no regression\|^INCONCLUSIVE/p' "$work/${1}1.txt"; }

n_aa=$(count aa 6)
n_think=$(count think 6 '^rule p99 > 3 s +FIRED +\(candidate journey p99 [0-9]')
n_wrong=$(count wrong 6 '^rule quality drop in a scenario +FIRED')
n_cmp=$(count cmp 5)
show aa
show think
show wrong
show cmp
echo
echo "A/A:        $n_aa of $runs canaries recommended a rollback (false alarms; must be 0)"
echo "think time: $n_think of $runs canaries rolled back for p99 > 3 s (must be $runs)"
echo "sabotage:   $n_wrong of $runs canaries rolled back for quality (must be $runs)"
echo "compare:    $n_cmp of $runs pairs of one build reported a regression (false alarms; at most 1)"
for kind in aa cmp; do
  for i in $(seq "$runs"); do
    code=$(cat "$work/$kind$i.code")
    if [ "$code" != 0 ]; then
      echo "--- $kind$i (exit $code):"
      grep -E 'REGRESSED|^ROLLBACK|^REGRESSION' "$work/$kind$i.txt" || true
    fi
  done
done
# How far the A/A canaries were from a false alarm: the median and the widest 95 % interval of
# each timing metric's change between rounds (a regression needs the whole interval beyond the
# tolerance, 10 %).
echo "A/A intervals of the change between rounds (median lower … median upper; widest):"
for metric in "latency p50" "latency p95" "latency p99" "throughput" "cost per journey (backend CPU)"; do
  for i in $(seq "$runs"); do
    grep "^$metric  " "$work/aa$i.txt" | sed 's/−/-/g' | awk '{ print $(NF-4), $(NF-1) }'
  done | awk -v m="$metric" '
    { lo[NR] = $1; hi[NR] = $2; if (-$1 > w) w = -$1; if ($2 > w) w = $2 }
    END {
      n = asort(lo); asort(hi)
      printf "  %-32s %+.1f %% … %+.1f %%; widest ±%.1f %%\n", m, lo[int((n + 1) / 2)], hi[int((n + 1) / 2)], w
    }'
done
echo "canary self-test: $(($(date +%s) - began)) s"
if [ -e "$work/failed" ] || [ "$n_aa" -ne 0 ] || [ "$n_think" -ne "$runs" ] || [ "$n_wrong" -ne "$runs" ] \
  || [ "$n_cmp" -gt 1 ]; then
  echo "canary-selftest: FAILED"
  exit 1
fi
echo "canary-selftest: passed"
