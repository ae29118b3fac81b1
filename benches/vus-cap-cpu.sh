#!/usr/bin/env bash
# How many connected virtual users one harness process holds on this machine, and its
# resident memory per virtual user (docs/distributed.md, "How far one process goes").
#
# Two loads, each at VUS virtual users (default "1000 5000 10000"), against the release
# apex-backend as a child process (embedded services) with one fixture user per virtual user
# and cheap password hashing (so logins are not what is measured):
#   idle    every virtual user logs in, connects and waits HOLD seconds (default 20)
#           connected, for events that do not come;
#   steady  every virtual user logs in once and runs journeys for DURATION seconds (default
#           40): connect, a message, the eleven events, 10 s connected, disconnect — one
#           journey per virtual user per ~10 s.
# It samples the harness's resident memory (VmRSS) and open descriptors every 0.2 s and
# prints, per load and size: journeys, failed, peak RSS, RSS per VU over a 1-VU run's peak.
#
#   cargo build --release -p apex-harness -p apex-backend && bash benches/vus-capacity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release"
sizes="${VUS:-1000 5000 10000}"
loads="${LOADS:-idle steady}"
hold="${HOLD:-20}"
duration="${DURATION:-40}"
max=$(printf '%s\n' $sizes | sort -n | tail -1)
work=$(mktemp -d)
backend_pid=""
cleanup() {
    if [ -n "$backend_pid" ]; then kill "$backend_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
unset APEX_DATABASE_URL APEX_REDIS_URL

# Fixtures: MAX virtual users, each on the first dataset.
mkdir -p "$work/fixtures"
cp -r fixtures/usage fixtures/expected fixtures/pricing.yaml "$work/fixtures/"
python3 - "$work/fixtures/users.yaml" "$max" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("users:\n")
    for i in range(1, n + 1):
        f.write(f"  - id: 7b0c6a0e-4c1f-4f6e-9a51-{i:012d}\n    email: cap{i:05d}@apex.test\n"
                f"    password: correct-horse\n    name: Capacity {i}\n"
                f"    usage: usage/alice.jsonl\n    pool: vu\n")
EOF

"$bin/apex-backend" --listen 127.0.0.1:0 --fixtures-dir "$work/fixtures" \
    --jwt-secret "capacity-bench-secret-of-at-least-32-bytes" \
    --argon2-m-cost 8 --argon2-t-cost 1 --login-ip-per-sec 0 --login-queue 100000 \
    --max-runs-per-user 100 --rate-limit-per-sec 1000 >"$work/backend.out" 2>"$work/backend.err" &
backend_pid=$!
for _ in $(seq 1 600); do
    grep -q "listening on" "$work/backend.out" 2>/dev/null && break
    sleep 0.1
done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/backend.out" | head -1)
[ -n "$addr" ] || { echo "the backend did not start:"; cat "$work/backend.err"; exit 1; }

events="[agent_started, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_completed]"
scenario() { # load vus
    local ramp=$(( $2 / 1000 + 1 ))
    if [ "$1" = idle ]; then
        printf 'name: idle %s\nusers: [{ pool: vu }]\nload: { vus: %s, iterations: 1, ramp_up: %ss }\nthresholds: { journey_duration: ["p(99) < 600000"] }\nsteps:\n  - login: {}\n  - connect: { transport: header }\n  - wait: %ss\n  - disconnect: {}\n' \
            "$2" "$2" "$ramp" "$hold"
    else
        printf 'name: steady %s\nusers: [{ pool: vu }]\nload: { vus: %s, duration: %ss, ramp_up: 10s, login: once_per_vu }\nthresholds: { journey_duration: ["p(99) < 60000"] }\nsteps:\n  - login: {}\n  - connect: { transport: header }\n  - send: { content: "Where am I wasting money on LLM calls?" }\n  - expect: { events: %s, timeout: 30s }\n  - wait: 10s\n  - disconnect: {}\n' \
            "$2" "$2" "$duration" "$events"
    fi
}

# Runs one load at one size; prints its line.
measure() { # load vus
    local file="$work/$1-$2.yaml" json="$work/$1-$2.json" peak=0 fds=0 rss n
    scenario "$1" "$2" >"$file"
    "$bin/apex-harness" run "$file" --target "http://$addr" --fixtures "$work/fixtures" \
        --seed 1 --json "$json" >"$work/$1-$2.out" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        n=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l || true)
        [ "${rss:-0}" -gt "$peak" ] && peak=$rss
        [ "$n" -gt "$fds" ] && fds=$n
        sleep 0.2
    done
    wait "$pid" || true
    python3 - "$json" "$1" "$2" "$peak" "$fds" "${base_kb:-0}" <<'EOF'
import json, sys
path, load, vus, peak, fds, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
try:
    r = json.load(open(path))
    journeys, failed, code = r["totals"]["journeys"], r["totals"]["failed_journeys"], str(r["exit_code"]) + " cpu " + str(r["scenarios"][0]["counters"].get("process_cpu_us", 0) // 1000) + "ms p50 " + str(r["scenarios"][0]["trends"].get("journey_duration", {}).get("p50"))
    classes = {k: v for s in r["scenarios"] for k, v in s["failures_by_class"].items()}
except Exception as e:  # no report: the run did not finish
    journeys, failed, code, classes = "-", "-", f"no report ({e})", {}
per_vu = (peak - base) / vus if base and vus > 1 else 0
print(f"{load:<7} {vus:>6} VUs  journeys {journeys:>6}  failed {failed:>5}  exit {code}  "
      f"peak fds {fds:>6}  peak RSS {peak / 1024:7.1f} MiB  per VU {per_vu:5.1f} KiB  {classes or ''}")
EOF
    echo "$peak" >"$work/last-peak"
}

echo "harness: $bin/apex-harness, backend on $addr, $(nproc) cores"
for load in $loads; do
    base_kb=""
    measure "$load" 1
    base_kb=$(cat "$work/last-peak")
    for vus in $sizes; do
        measure "$load" "$vus"
    done
done
