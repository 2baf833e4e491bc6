#!/usr/bin/env bash
# Bundles the built Worker for each deployed environment as `wrangler deploy` would, without
# deploying (`--dry-run --outdir`: no account needed), and fails when the upload exceeds the
# budget. Cloudflare's limit is the compressed size of the upload: 3 MB on the Free plan, 10 MB on
# paid plans; the budget keeps us well inside the smaller one. Needs scripts/build-worker.sh first.
# Usage: scripts/edge-bundle.sh [outdir]   (prints each environment's raw and gzip sizes)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUDGET_GZIP_KIB=1024
if [ $# -ge 1 ]; then
  mkdir -p "$1"
  OUT="$(cd "$1" && pwd)"
else
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
cd "$ROOT"
[ -f edge-worker/build/index.js ] || die "no built Worker: run scripts/build-worker.sh first"
for env in staging production; do
  rm -rf "$OUT/$env"
  wrangler deploy --dry-run --env "$env" --outdir "$OUT/$env" >"$OUT/$env.log" 2>&1 ||
    { cat "$OUT/$env.log"; die "wrangler deploy --dry-run --env $env failed"; }
  # wrangler's own figure, as Cloudflare counts it: "Total Upload: 1790.43 KiB / gzip: 656.40 KiB".
  total=$(grep -o 'Total Upload: .*' "$OUT/$env.log" | head -1 || true)
  gz=$(printf '%s' "$total" | sed -n 's/.*gzip: \([0-9.]*\) KiB.*/\1/p')
  [ -n "$gz" ] || { cat "$OUT/$env.log"; die "no upload size in wrangler's output"; }
  log "edge bundle ($env): $total (budget $BUDGET_GZIP_KIB KiB gzip)"
  python3 -c "import sys; sys.exit(0 if float('$gz') <= $BUDGET_GZIP_KIB else 1)" ||
    die "the $env bundle is $gz KiB compressed, over the budget of $BUDGET_GZIP_KIB KiB"
done
