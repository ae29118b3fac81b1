# Sourced by ci/containers.sh: a private Docker daemon for the run, and its removal.
#   docker_start  — installs docker.io when dockerd is missing, starts dockerd unless a daemon
#                   already answers (one that was running is left alone);
#   docker_stop   — stops the daemon this script started (by its PID), removes its containers
#                   and the docker0 bridge. Idempotent; safe from a trap.
# The daemon runs with --iptables=false: ports published to 127.0.0.1 go through
# docker-proxy, so no nat or filter rules are written and none are left behind.

APEX_DOCKER_ROOT="${APEX_DOCKER_ROOT:-/var/lib/apex-docker}"
APEX_DOCKER_PIDFILE=/run/apex-dockerd.pid
APEX_DOCKER_LOG=/var/log/apex-dockerd.log
APEX_DOCKER_STARTED=

docker_answers() { docker info >/dev/null 2>&1; }

docker_install() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "docker: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  fi
}

docker_start() {
  if docker_answers; then
    if docker_our_pid >/dev/null; then
      # Ours, left over by a killed run: used, and stopped at the end like a new one.
      APEX_DOCKER_STARTED=$(docker_our_pid)
      echo "docker: our dockerd from an earlier run answers (pid $APEX_DOCKER_STARTED); using it"
    else
      echo "docker: a daemon already answers; using it, it is left running"
    fi
    return 0
  fi
  # A daemon of ours that does not answer.
  docker_stop_pid
  mkdir -p "$APEX_DOCKER_ROOT"
  dockerd --data-root "$APEX_DOCKER_ROOT" --pidfile "$APEX_DOCKER_PIDFILE" \
    --iptables=false --ip-forward=false --ip-masq=false --storage-driver=overlay2 \
    >"$APEX_DOCKER_LOG" 2>&1 &
  APEX_DOCKER_STARTED=$!
  for _ in $(seq 1 100); do
    docker_answers && break
    kill -0 "$APEX_DOCKER_STARTED" 2>/dev/null || break
    sleep 0.2
  done
  if ! docker_answers; then
    echo "docker: dockerd did not answer; its log:" >&2
    tail -n 30 "$APEX_DOCKER_LOG" >&2
    return 1
  fi
  echo "docker: dockerd $(docker version --format '{{.Server.Version}}') started (pid $APEX_DOCKER_STARTED, data in $APEX_DOCKER_ROOT)"
}

# The PID of a live dockerd started by this script (this run's or a killed run's).
docker_our_pid() {
  local pid
  pid=$(cat "$APEX_DOCKER_PIDFILE" 2>/dev/null || true)
  [ -n "$pid" ] || pid="$APEX_DOCKER_STARTED"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(command -v dockerd)" ] || return 1
  echo "$pid"
}

# Stops our dockerd, by its PID.
docker_stop_pid() {
  local pid
  pid=$(docker_our_pid) || { rm -f "$APEX_DOCKER_PIDFILE"; return 0; }
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  # containerd (its child) goes with it; wait so the bridge can be removed.
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$APEX_DOCKER_PIDFILE"
}

docker_stop() {
  # A daemon we did not start is left alone (its containers too).
  [ -n "$APEX_DOCKER_STARTED" ] || return 0
  # Containers testcontainers left (a test process killed before its drops ran).
  local left
  left=$(docker ps -aq --filter label=org.testcontainers.managed-by=testcontainers 2>/dev/null || true)
  [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
  docker_stop_pid
  ip link delete docker0 2>/dev/null || true
  APEX_DOCKER_STARTED=
  echo "docker: daemon stopped, docker0 removed"
}
