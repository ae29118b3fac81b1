#!/usr/bin/env bash
# Makes sure this machine's PostgreSQL and Redis answer, starting them if they are down.
# Usable locally; prints what it did.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if pg_up; then
  echo "postgres: up"
elif command -v pg_ctlcluster >/dev/null; then
  echo "postgres: down, starting"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up && echo "postgres: started" || echo "postgres: could not be started" >&2
else
  echo "postgres: not installed here" >&2
fi

if redis_up; then
  echo "redis: up"
elif command -v redis-server >/dev/null; then
  echo "redis: down, starting"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
  redis_up && echo "redis: started" || echo "redis: could not be started" >&2
else
  echo "redis: not installed here" >&2
fi
