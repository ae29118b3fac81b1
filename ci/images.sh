#!/usr/bin/env bash
# Builds the images the `containers` feature starts, from Debian's packages only (no registry):
#   apex-services/postgres:15  (postgresql-15; trust auth; `-c fsync=off` etc. appended)
#   apex-services/redis:7      (redis-server --bind 0.0.0.0 --protected-mode no)
# One debootstrap'd bookworm root with both packages, imported twice with different
# entrypoints (the layers are the same tarball). Skips when both images exist.
# Needs a running Docker daemon and debootstrap; the mirror is read from apt's sources.
set -euo pipefail

PG_IMAGE="${APEX_POSTGRES_IMAGE:-apex-services/postgres:15}"
REDIS_IMAGE="${APEX_REDIS_IMAGE:-apex-services/redis:7}"

if docker image inspect "$PG_IMAGE" >/dev/null 2>&1 &&
  docker image inspect "$REDIS_IMAGE" >/dev/null 2>&1; then
  echo "images: $PG_IMAGE and $REDIS_IMAGE present, not rebuilt"
  exit 0
fi

# The machine's Debian mirror: the first non-security URI in apt's sources.
mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
    grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      grep -v security | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' |
      head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=$(mirror)
SUITE="${APEX_IMAGES_SUITE:-bookworm}"

ROOT=$(mktemp -d /var/tmp/apex-images.XXXXXX)
chmod 755 "$ROOT"
cleanup() {
  # A chroot's maintainer scripts may have started a daemon; end only those rooted in $ROOT.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && kill "${p#/proc/}" 2>/dev/null || true
  done
  for m in proc sys dev/pts dev; do umount "$ROOT/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT

echo "images: debootstrap $SUITE from $MIRROR into $ROOT"
start=$SECONDS
debootstrap --variant=minbase --include=postgresql-15,redis-server \
  "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
  tail -n 30 "$ROOT.log" >&2
  rm -f "$ROOT.log"
  exit 1
}
rm -f "$ROOT.log"
echo "images: debootstrap took $((SECONDS - start)) s"

# Trim: apt caches and lists, docs; the image needs only the binaries.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*

# Postgres: a cluster of its own in /var/lib/postgresql/data (trust auth, also from the
# container network), independent of whatever cluster the package's scripts made or skipped.
rm -rf "$ROOT/var/lib/postgresql/15" "$ROOT/etc/postgresql/15"
mkdir -p "$ROOT/var/lib/postgresql/data" "$ROOT/var/run/postgresql"
chroot "$ROOT" chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot --userspec=postgres:postgres "$ROOT" \
  /usr/lib/postgresql/15/bin/initdb -D /var/lib/postgresql/data -U postgres -A trust \
  -E UTF8 --locale=C.UTF-8 --no-instructions >/dev/null
cat >>"$ROOT/var/lib/postgresql/data/pg_hba.conf" <<'HBA'
host all all 0.0.0.0/0 trust
host all all ::/0 trust
HBA

# The testcontainers Postgres module waits for "ready to accept connections" on both stdout
# and stderr: postgres stays PID 1, its log goes to both. Arguments (`-c fsync=off`) follow.
cat >"$ROOT/usr/local/bin/apex-postgres" <<'SH'
#!/bin/bash
exec /usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/data \
  -c port=5432 -c listen_addresses='*' -c logging_collector=off "$@" \
  2> >(tee /dev/stderr)
SH
cat >"$ROOT/usr/local/bin/apex-redis" <<'SH'
#!/bin/bash
exec /usr/bin/redis-server --bind 0.0.0.0 --protected-mode no --port 6379 \
  --save '' --appendonly no --logfile '' --daemonize no "$@"
SH
chmod 755 "$ROOT/usr/local/bin/apex-postgres" "$ROOT/usr/local/bin/apex-redis"

start=$SECONDS
tar -C "$ROOT" --one-file-system -c . | docker import \
  --change 'USER postgres' --change 'EXPOSE 5432' \
  --change 'ENTRYPOINT ["/usr/local/bin/apex-postgres"]' --change 'CMD []' \
  - "$PG_IMAGE" >/dev/null
# The same root, a different entrypoint: a commit of an unstarted container adds no layer
# (no second import, no builder needed).
cid=$(docker create "$PG_IMAGE")
docker commit --change 'USER redis' --change 'EXPOSE 6379' \
  --change 'ENTRYPOINT ["/usr/local/bin/apex-redis"]' --change 'CMD []' \
  "$cid" "$REDIS_IMAGE" >/dev/null
docker rm "$cid" >/dev/null
echo "images: imported $PG_IMAGE and $REDIS_IMAGE in $((SECONDS - start)) s"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^apex-services/' || true
