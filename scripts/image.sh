#!/usr/bin/env bash
# The core's OCI image, built here without a Docker engine (buildah, from scratch), then tried: its
# root filesystem is mounted, the core started from it with chroot as the image's user and
# environment, against PostgreSQL, until /readyz answers 200. Prints the image's size.
#
#   scripts/image.sh                 build from the debug binary (what the test command does: the
#                                    packaging is what is tried; the binary is the one tests use)
#   scripts/image.sh --release       build from a release binary (what is shipped; its size is the
#                                    one docs/benchmarks.md reports)
#   scripts/image.sh --keep          leave the image in buildah's store (tagged ticketing-core)
#
# The image holds the binary, the shared libraries ldd names for it, the CA certificates, a passwd
# entry for its non-root user and an empty /tmp: the same layout as the Dockerfile's distroless
# stage (keep the two in step). Storage lives in the cache, outside the clone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROFILE=debug
KEEP=
for arg in "$@"; do
  case $arg in
    --release) PROFILE=release ;;
    --keep) KEEP=1 ;;
    *) die "unknown option $arg" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "buildah from scratch and chroot need root"
command -v buildah >/dev/null || die "buildah not found (scripts/bootstrap.sh installs it)"

STORE="$CACHE/buildah"
BUILDAH=(env BUILDAH_FORMAT=docker buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver vfs)
UID_GID=10001:10001
PORT="${IMAGE_TEST_PORT:-18480}"
DB="ticketing_image_test"
PG_SERVER="postgres://$PGUSER@$PGHOST:$PGPORT"

if [ "$PROFILE" = release ]; then
  cargo build --locked -q --release -p regional-core
else
  # The same package set as the test command's build, so that nothing is compiled again.
  cargo build --locked -q --workspace --bins
fi
BIN="$CARGO_TARGET_DIR/$PROFILE/regional-core"

# ---- the root filesystem ------------------------------------------------------------------------
STAGE=$(mktemp -d)
WORK=""
cleanup() {
  [ -n "${CORE_PID:-}" ] && kill "$CORE_PID" 2>/dev/null && wait "$CORE_PID" 2>/dev/null
  [ -n "$WORK" ] && "${BUILDAH[@]}" rm "$WORK" >/dev/null 2>&1
  [ -n "${CTR:-}" ] && "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1
  [ -z "$KEEP" ] && [ -n "${IMAGE:-}" ] && "${BUILDAH[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
  psql -q "$PG_SERVER/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$STAGE"
  true
}
trap cleanup EXIT

install -D -m 0755 "$BIN" "$STAGE/usr/local/bin/regional-core"
strip "$STAGE/usr/local/bin/regional-core"
# Every shared library the binary loads, at the path the loader looks for it.
for lib in $(ldd "$BIN" | awk '/=> \// { print $3 } /^[[:space:]]*\/lib/ { print $1 }'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$STAGE$lib"
done
# The CA certificates, for TLS to managed PostgreSQL, Kafka, SMTP and Stripe (Debian's bundle).
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$STAGE/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\ncore:x:10001:10001:regional core:/nonexistent:/sbin/nologin\n' \
  >"$STAGE/etc/passwd"
printf 'root:x:0:\ncore:x:10001:\n' >"$STAGE/etc/group"
install -d -m 1777 "$STAGE/tmp"

# ---- the image ----------------------------------------------------------------------------------
CTR=$("${BUILDAH[@]}" from scratch)
"${BUILDAH[@]}" copy --quiet "$CTR" "$STAGE/" / >/dev/null
"${BUILDAH[@]}" config \
  --user "$UID_GID" \
  --port 8080 --port 9090 --port 50051 \
  --env CORE_LISTEN=0.0.0.0:8080 \
  --env CORE_METRICS_LISTEN=0.0.0.0:9090 \
  --env LOG_FORMAT=json \
  --env RUST_LOG=info \
  --entrypoint '["/usr/local/bin/regional-core"]' \
  --cmd serve \
  --healthcheck 'CMD ["/usr/local/bin/regional-core", "probe", "http://127.0.0.1:8080/readyz"]' \
  --healthcheck-interval 10s --healthcheck-timeout 3s --healthcheck-start-period 20s --healthcheck-retries 3 \
  --label org.opencontainers.image.title=ticketing-core \
  "$CTR"
IMAGE=$("${BUILDAH[@]}" commit --quiet --format docker --rm "$CTR" ticketing-core:test)
CTR=""
HEALTH=$("${BUILDAH[@]}" inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$IMAGE")
[[ "$HEALTH" == *probe* ]] || die "the image carries no health check (got '$HEALTH')"
log "image ticketing-core ($PROFILE binary): $IMAGE"

# ---- in step with the Dockerfile's final stage: the same user, environment and ports -----------
grep -qx "USER $UID_GID" "$ROOT/Dockerfile" || die "the Dockerfile's USER is not $UID_GID"
for kv in $("${BUILDAH[@]}" inspect --type image --format '{{range .Docker.Config.Env}}{{println .}}{{end}}' "$IMAGE"); do
  grep -q -- "$kv" "$ROOT/Dockerfile" || die "the image sets $kv, the Dockerfile does not"
done
[ "$(grep -m1 '^EXPOSE' "$ROOT/Dockerfile")" = "EXPOSE 8080 9090 50051" ] || die "the Dockerfile exposes other ports"
grep -q 'CMD \["/usr/local/bin/regional-core", "probe"' "$ROOT/Dockerfile" || die "the Dockerfile's health check differs"

# ---- tried: mount it, chroot into it, start the core as the image says --------------------------
WORK=$("${BUILDAH[@]}" from --quiet "$IMAGE")
ROOTFS=$("${BUILDAH[@]}" mount "$WORK")
USER_OF=$("${BUILDAH[@]}" inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")
[ "$USER_OF" = "$UID_GID" ] || die "the image runs as '$USER_OF', not $UID_GID"
mapfile -t ENVS < <("${BUILDAH[@]}" inspect --type image --format '{{range .Docker.Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
# Only the image's environment, plus the least a deployment gives it (a database and a signing
# key); the HTTP, metrics and check-in ports are moved to loopback ports off the defaults so that
# a running stack does not collide (the image's own check-in default is loopback too).
PGOPTIONS=--client-min-messages=warning psql -q "$PG_SERVER/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
SEED="image:$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
env -i "${ENVS[@]}" \
  CORE_LISTEN="127.0.0.1:$PORT" CORE_METRICS_LISTEN="127.0.0.1:$((PORT + 1))" CORE_GRPC_LISTEN="127.0.0.1:$((PORT + 2))" \
  DATABASE_URL="$PG_SERVER/$DB" CORE_SIGNING_KEY="$SEED" \
  "$(command -v chroot)" --userspec="$UID_GID" "$ROOTFS" /usr/local/bin/regional-core serve >"$STAGE/core.log" 2>&1 &
CORE_PID=$!
ready=
for _ in $(seq 1 120); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ]; then ready=1; break; fi
  kill -0 "$CORE_PID" 2>/dev/null || break
  sleep 0.5
done
if [ -z "$ready" ]; then
  cat "$STAGE/core.log" >&2
  die "the core started from the image did not answer /readyz with 200"
fi
# The health check the image declares, run inside the image.
chroot --userspec="$UID_GID" "$ROOTFS" /usr/local/bin/regional-core probe "http://127.0.0.1:$PORT/readyz" >/dev/null \
  || die "the image's health check failed against a ready core"
log "the core started from the image answers /readyz 200 as uid ${UID_GID%%:*}"
SIZE=$(du -sb "$ROOTFS" | cut -f1)
printf 'image size (%s binary): %s bytes (%s MiB unpacked; the binary %s MiB)\n' "$PROFILE" "$SIZE" \
  "$((SIZE / 1048576))" "$(($(stat -c %s "$ROOTFS/usr/local/bin/regional-core") / 1048576))"
