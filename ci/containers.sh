#!/usr/bin/env bash
# The `containers` feature for real: Postgres and Redis in Docker, started by testcontainers.
#  1. installs docker.io and debootstrap when missing (Debian's packages);
#  2. starts a private dockerd (ci/docker.sh) unless a daemon already answers;
#  3. builds apex-services/postgres:15 and apex-services/redis:7 from Debian's packages
#     (ci/images.sh; skipped when both exist — they persist in the daemon's data root);
#  4. runs apex-backend's service tests and the bundled harness run, built with the
#     `containers` feature (ci/test.sh's build, reused), WITHOUT the service URLs, so the
#     containers are what they use (APEX_REQUIRE_SERVICES=1: no containers fails, not skips);
#  5. stops the daemon and removes what it left (containers, docker0), also on failure.
# Prints how long each part took. Runs locally too (as root). Measured here: about 1 min once
# the images exist (dockerd 1 s, service tests 15 s, harness run 40 s); a machine without
# them adds about 15 s of install and 1½–2½ min of image build (debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/docker.sh

declare -a TIMES=()
step() { # step NAME COMMAND...: runs, times and records a part
  local name=$1 start=$SECONDS
  shift
  echo "--- containers: $name"
  "$@"
  TIMES+=("$name: $((SECONDS - start)) s")
}
report() {
  local rc=$?
  docker_stop || true
  echo "--- containers: times"
  local t
  for t in "${TIMES[@]}"; do echo "  $t"; done
  [ "$rc" = 0 ] || echo "--- containers: FAILED (exit $rc)" >&2
}
trap report EXIT
# Killed or interrupted: exit, so that the EXIT trap stops the daemon.
trap 'exit 143' TERM
trap 'exit 130' INT

step "install docker.io, debootstrap" docker_install
step "start dockerd" docker_start
step "images" bash ci/images.sh

# The service URLs stay unset: the containers are the services.
unset APEX_DATABASE_URL APEX_REDIS_URL
export APEX_REQUIRE_SERVICES=1
# ci/test.sh's build (same packages, same features): nothing to compile after it.
BUILD=(--workspace --locked --features apex-harness/containers)

step "build (ci/test.sh's, --features apex-harness/containers)" \
  cargo test "${BUILD[@]}" --no-run -q

# The service tests (Postgres store and Redis bus contracts, the multi-instance journeys,
# outages through fault proxies) and the container selection's own unit tests.
step "service tests on containers" \
  cargo test "${BUILD[@]}" -q --lib --test integration -- \
  services:: contracts::postgres contracts::redis contracts::two_redis

# The bundled harness run: every scenario against the bundled backend, whose services are
# now the containers (its stderr says which).
harness_run() {
  local err out rc=0
  err=$(mktemp)
  out=$(mktemp)
  "${CARGO_TARGET_DIR:-target}/debug/apex-harness" run --fixtures fixtures scenarios \
    >"$out" 2>"$err" || rc=$?
  cat "$out"
  cat "$err" >&2
  if [ "$rc" = 0 ] && ! grep -q "services: containers" "$err"; then
    echo "containers: the bundled backend did not run on containers" >&2
    rc=1
  fi
  # The Redis outage scenarios run through fault proxies in front of the containers.
  if [ "$rc" = 0 ] && { grep -q "SKIP" "$out" || ! grep -q "PASS  Redis down for 5 s mid-run" "$out"; }; then
    echo "containers: scenarios were skipped on containers" >&2
    rc=1
  fi
  rm -f "$err" "$out"
  return "$rc"
}
step "bundled harness run on containers" harness_run

left=$(docker ps -aq --filter label=org.testcontainers.managed-by=testcontainers | wc -l)
echo "containers: $left container(s) left by the test processes (removed on stop)"
