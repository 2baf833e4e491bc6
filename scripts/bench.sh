#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: the ledger natively, then the health chain, the hold path and the
# waiting room through a fresh local stack (wrangler dev + the core, or workerd alone). Bounded in
# count and time; loopback only.
# Results (JSON) go to $BENCH_OUT (default .local/bench/).
#   scripts/bench.sh            everything
#   scripts/bench.sh checkout   only checkout end to end
#   scripts/bench.sh sale       only the flash sale: 20,000 buyers for 5,000 seats, audited
#   scripts/bench.sh import     only the 100,000-seat import (native, no stack)
#   scripts/bench.sh edge       only holds, queue joins and polls through one workerd process
# BENCH_AT=<commit> runs the stack (the Worker and the core) of that commit, built in a cache of its
# own, under this commit's load generator: before and after on one machine, measured alike.
#   BENCH_AT=3e2e978 scripts/bench.sh checkout
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WHAT="${1:-all}"
case $WHAT in all | checkout | sale | import | edge) ;; *) die "usage: scripts/bench.sh [all|checkout|sale|import|edge]" ;; esac

OUT="${BENCH_OUT:-$LOCAL/bench}"
if [ "$WHAT" = all ] || [ "$WHAT" = import ]; then
  mkdir -p "$OUT"
  log "seat import: a 100,000-seat CSV read and checked (native, release)"
  cargo bench -q --locked -p regional-core --bench seat_import | tee "$OUT/seat-import.json"
  [ "$WHAT" = import ] && exit 0
fi

EDGE_PORT="${BENCH_EDGE_PORT:-18787}"
CORE_PORT="${BENCH_CORE_PORT:-18080}"
METRICS_PORT="${BENCH_METRICS_PORT:-19464}"
# Benchmarks pay with the built-in test provider: development mode (never in production).
export CORE_DEV_MODE=true CORE_METRICS_LISTEN="127.0.0.1:$METRICS_PORT"
mkdir -p "$OUT" "$LOCAL/logs"
bash "$ROOT/scripts/bootstrap.sh" --no-kafka --no-fuzz
bash "$ROOT/scripts/dev-keys.sh"
bash "$ROOT/scripts/build-worker.sh"
timed "build (release loadtest, core)" cargo build -q --release -p loadtest -p regional-core
cargo build -q -p regional-core
LT="$CARGO_TARGET_DIR/release/loadtest"
# The stack measured: this tree's, or BENCH_AT's (its sources from git, its own target directory).
STACK="$ROOT" CORE_BIN="$CARGO_TARGET_DIR/release/regional-core" BENCH_DB_NAME=ticketing_bench
if [ -n "${BENCH_AT:-}" ]; then
  case $WHAT in checkout | sale | edge) ;; *) die "BENCH_AT: only with checkout, sale or edge" ;; esac
  sha=$(git -C "$ROOT" rev-parse --verify --quiet "${BENCH_AT}^{commit}") || die "BENCH_AT: $BENCH_AT is not a commit here"
  STACK="$CACHE/bench-at/$sha"
  if [ ! -f "$STACK/.unpacked" ]; then
    rm -rf "$STACK" && mkdir -p "$STACK"
    git -C "$ROOT" archive "$sha" | tar -x -C "$STACK"
    touch "$STACK/.unpacked"
  fi
  ln -sfn "$ROOT/node_modules" "$STACK/node_modules"
  at_target="$CACHE/target-bench-at"
  CARGO_TARGET_DIR="$at_target" bash "$STACK/scripts/build-worker.sh"
  (cd "$STACK" && CARGO_TARGET_DIR="$at_target" timed "build (release core at ${sha:0:8})" cargo build -q --release -p regional-core)
  CORE_BIN="$at_target/release/regional-core" BENCH_DB_NAME="ticketing_bench_${sha:0:8}"
  log "measuring the stack at ${sha:0:12} ($STACK) with this tree's load generator"
fi
set -a
source "$LOCAL/edge.env"
source "$LOCAL/core.env"
set +a

# 5,000 holds on 20,000 seats through `$1` (wrangler: wrangler dev; workerd: one workerd process),
# one section and eight, at concurrency 32 and 128, each with a fresh isolate and storage.
bench_holds() {
  local runtime=$1 sharding c url flag
  for sharding in single sharded; do
    for c in 32 128; do
      if [ "$runtime" = wrangler ]; then start_edge; url="http://127.0.0.1:$EDGE_PORT"; else start_workerd; url="http://127.0.0.1:$WORKERD_PORT"; fi
      flag=()
      [ "$sharding" = sharded ] && flag=(--sharded)
      log "holds: $runtime, $sharding, concurrency $c"
      "$LT" holds --edge "$url" --seats 20000 --sections 8 "${flag[@]}" \
        --holds 5000 --concurrency "$c" >"$OUT/holds-$runtime-$sharding-c$c.json"
      stop_edge
    done
  done
}

if [ "$WHAT" = all ]; then
log "ledger (native)"
"$LT" ledger --rounds 50 | tee "$OUT/ledger.json"
fi

PIDS=()
stop_all() { # TERM, then up to 10 s for the core's drain (SHUTDOWN_DRAIN_SECS) before KILL
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

# A fresh edge (new DO storage, new isolate) for each scenario, so memory figures are its own.
start_edge() {
  rm -rf "$OUT/state"
  (cd "$ROOT" && exec setsid wrangler dev --ip 127.0.0.1 --port "$EDGE_PORT" --inspector-port 0 \
    --persist-to "$OUT/state" --env-file "$LOCAL/edge.env" --var "CORE_URL:http://127.0.0.1:$CORE_PORT" \
    --show-interactive-dev-session=false --log-level error) >"$LOCAL/logs/bench-edge.log" 2>&1 </dev/null &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$EDGE_PORT/healthz" 90 || die "edge did not start"
}
stop_edge() {
  kill -TERM -- "-${PIDS[-1]}" 2>/dev/null || true
  sleep 1
  kill -KILL -- "-${PIDS[-1]}" 2>/dev/null || true
  unset 'PIDS[-1]'
}

WORKERD_PORT="${BENCH_WORKERD_PORT:-18788}"
start_workerd() { # $1: keep storage ("keep") or start empty
  [ "${1:-}" = keep ] || rm -rf "$OUT/state-workerd"
  # The objects' test settings never from the shell: a benchmark measures production's.
  (cd "$STACK" && exec setsid env -u HOLD_RECORDS_RETENTION_SECONDS -u HOLDS_PER_VISITOR_PER_MINUTE \
    node loadtest/workerd-server.mjs "$WORKERD_PORT" "$OUT/state-workerd") \
    >"$LOCAL/logs/bench-workerd.log" 2>&1 </dev/null &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$WORKERD_PORT/healthz" 60 || die "workerd did not start"
}

if [ "$WHAT" = all ]; then
(DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/ticketing" exec setsid "$CARGO_TARGET_DIR/debug/regional-core" \
  serve --listen "127.0.0.1:$CORE_PORT") >"$LOCAL/logs/bench-core.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$CORE_PORT/healthz" 60 || die "core did not start"

start_edge
log "health chain (edge -> DO -> core -> PostgreSQL)"
"$LT" http --url "http://127.0.0.1:$EDGE_PORT/healthz" --requests 2000 --concurrency 8 | tee "$OUT/healthz.json"
stop_edge

# The hold path through wrangler dev (what scripts/dev.sh runs) and through one workerd process
# without wrangler's proxy (miniflare), each with a fresh isolate and storage.

bench_holds wrangler
bench_holds workerd

# Memory of one inventory object: fill it, restart the runtime, and read the isolate's wasm memory
# after the object alone has loaded from storage (no publish body parsed in that isolate).
for point in 100:0 20000:0 20000:5000 50000:0 50000:5000; do
  seats=${point%:*} holds=${point#*:}
  start_workerd
  event=$("$LT" holds --edge "http://127.0.0.1:$WORKERD_PORT" --seats "$seats" --sections 1 --holds "$holds" \
    --concurrency 32 | python3 -c 'import json,sys; print(json.load(sys.stdin)["event"])')
  stop_edge
  start_workerd keep
  log "memory: $seats seats, $holds holds"
  "$LT" stats --edge "http://127.0.0.1:$WORKERD_PORT" --event "$event" >"$OUT/memory-$seats-$holds.json"
  stop_edge
done
# The waiting room through workerd: joins and polls over 4 queue shards (DO requests per poll),
# then one shard taking 250,000 places, and its heap after a restart (places live in storage).
start_workerd
log "queue: 3,000 buyers, 2 polls each, 4 shards"
"$LT" queue --edge "http://127.0.0.1:$WORKERD_PORT" --buyers 3000 --polls 2 --shards 4 --concurrency 32 \
  >"$OUT/queue-4shards.json"
stop_edge
start_workerd
log "queue: 250,000 places in one shard"
event=$("$LT" queue --edge "http://127.0.0.1:$WORKERD_PORT" --buyers 250000 --polls 1 --shards 1 --concurrency 64 \
  --max-seconds 1200 | tee "$OUT/queue-250k.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["event"])')
stop_edge
start_workerd keep
"$LT" stats --edge "http://127.0.0.1:$WORKERD_PORT" --event "$event" --waiting-room >"$OUT/queue-250k-restarted.json"
stop_edge
stop_all
fi

if [ "$WHAT" = edge ]; then
  # Holds, joins and polls through one workerd process (no core needed: the load generator signs
  # the event's publication itself), each with a fresh isolate and storage.
  bench_holds workerd
  start_workerd
  log "queue: 3,000 buyers, 2 polls each, 4 shards"
  "$LT" queue --edge "http://127.0.0.1:$WORKERD_PORT" --buyers 3000 --polls 2 --shards 4 --concurrency 32 \
    >"$OUT/queue-4shards.json"
  stop_all
  log "results in $OUT"
  exit 0
fi

# Checkout end to end: the release core (a fresh database of its own, the built-in test provider)
# and the Worker in one workerd process; each buyer holds two seats, checks out, pays, waits until
# paid.
BENCH_DB="postgres://$PGUSER@$PGHOST:$PGPORT/$BENCH_DB_NAME"
PGOPTIONS=--client-min-messages=warning psql -q -d "postgres://$PGUSER@$PGHOST:$PGPORT/postgres" \
  -c "DROP DATABASE IF EXISTS \"$BENCH_DB_NAME\" WITH (FORCE)" >/dev/null
(DATABASE_URL="$BENCH_DB" EDGE_URL="http://127.0.0.1:$WORKERD_PORT" CORE_PUBLIC_URL="http://127.0.0.1:$CORE_PORT" \
  exec setsid "$CORE_BIN" serve --listen "127.0.0.1:$CORE_PORT") \
  >"$LOCAL/logs/bench-core.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$CORE_PORT/healthz" 60 || die "core did not start"
export CORE_URL="http://127.0.0.1:$CORE_PORT"
start_workerd
admin_key=$(DATABASE_URL="$BENCH_DB" "$CORE_BIN" create-admin \
  --email "bench-$(date +%s%N)@bench.local" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
if [ "$WHAT" != sale ]; then
for c in 16 64; do
  log "checkout: 2,000 buyers, concurrency $c"
  PLATFORM_ADMIN_KEY="$admin_key" DATABASE_URL="$BENCH_DB" "$LT" checkout --edge "http://127.0.0.1:$WORKERD_PORT" \
    --core "http://127.0.0.1:$CORE_PORT" --core-metrics "http://127.0.0.1:$METRICS_PORT" --buyers 2000 --concurrency "$c" >"$OUT/checkout-c$c.json"
done
fi

# The flash sale (docs/benchmarks.md, "Flash sale"): 20,000 buyers arriving in the on-sale second
# for 5,000 seats, half of them going for the same 500, through the line (proof of work), holds,
# checkout and the test provider; then the audit. The run fails when the audit finds anything.
if [ "$WHAT" != checkout ]; then
  log "sale: 20,000 buyers, 5,000 seats, half racing for 500"
  PLATFORM_ADMIN_KEY="$admin_key" DATABASE_URL="$BENCH_DB" "$LT" sale --edge "http://127.0.0.1:$WORKERD_PORT" \
    --core "http://127.0.0.1:$CORE_PORT" --buyers 20000 --seats 5000 --hot-seats 500 --hot-share 0.5 \
    --max-tickets 2 --arrival burst --difficulty 4 --bot-share 0.02 --decline-share 0.05 --abandon-share 0.05 \
    --admit-per-minute 6000 --max-active 1000 --hold-seconds 60 --concurrency 256 --max-seconds 1500 --baseline \
    --out "$OUT" >"$OUT/sale.json"
fi
log "results in $OUT"
