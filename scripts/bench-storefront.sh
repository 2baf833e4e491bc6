#!/usr/bin/env bash
# The storefront's figures for docs/benchmarks.md (scripts/bench-storefront.mjs): the seat map's
# draw and update times for 20,000 seats in headless Chromium, and the seat objects' requests per
# viewer per minute while 1,000 viewers follow one event. Loopback only; about two minutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/build-worker.sh" >&2
cd "$ROOT"
exec node scripts/bench-storefront.mjs
