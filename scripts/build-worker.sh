#!/usr/bin/env bash
# Builds the edge Worker (edge-worker + durable-objects + shared-types) to wasm with worker-build,
# into edge-worker/build/. Skips the build when no input changed since the last one (the Rust
# sources, and the templates, assets and OpenAPI document compiled into the Worker).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wasm_env

out="$ROOT/edge-worker/build"
stamp="$out/.inputs.sha256"
inputs_hash() {
  (cd "$ROOT" && find Cargo.toml Cargo.lock docs/edge-openapi.json shared-types durable-objects edge-worker \
    -path edge-worker/build -prune -o -type f \( -name '*.rs' -o -name 'Cargo.toml' -o -name Cargo.lock -o -name '*.html' \
    -o -name '*.css' -o -name '*.js' -o -name edge-openapi.json \) -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
want=$(inputs_hash)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$out/index.js" ] && [ "${1:-}" != --force ]; then
  log "worker: up to date ($out)"
  exit 0
fi
[ -x "$WASM_BINDGEN_BIN" ] || die "wasm-bindgen missing: run scripts/bootstrap.sh"
cd "$ROOT/edge-worker"
timed "worker-build --release" worker-build --release
echo "$want" >"$stamp"
log "worker: $(du -h "$out/index_bg.wasm" 2>/dev/null | cut -f1) wasm in $out"
