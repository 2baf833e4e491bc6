#!/usr/bin/env bash
# The test command: every test, on the real parts. Exits non-zero on any failure.
#   1. lint:     cargo fmt --check, cargo clippy --all-targets -D warnings, import loops of 2 at most,
#                the alert rules (promtool check and unit tests), the Kubernetes manifests (schemas and
#                checkov, scripts/check-k8s.py)
#   2. host:     unit, property and PostgreSQL tests of every crate (cargo nextest)
#      fuzz:     every fuzz target for 10 s (scripts/fuzz.sh --smoke: the regressions replayed, a short
#                search from the repository's seeds with a fixed seed)
#   3. workerd:  the compiled Worker and its Durable Objects in workerd (node --test + miniflare), and
#                each deployed environment's bundle (wrangler deploy --dry-run) within its size budget;
#                the local Stripe (scripts/fake-stripe.mjs) against Stripe's official Node library
#   4. e2e:      the core's image (built with buildah, started from its root filesystem), then the
#                real stack (core binary + wrangler dev + PostgreSQL + Kafka broker)
# Options: --only lint|host|fuzz|workerd|e2e runs one stage (after the bootstrap).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --only) ONLY=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

started=$(date +%s)
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"

PG_SERVER="postgres://$PGUSER@$PGHOST:$PGPORT"
# #[sqlx::test] creates (and drops) one database per test on this server.
export DATABASE_URL="$PG_SERVER/postgres"
# Every stage builds the same package set (--workspace) so that features unify identically and
# nothing is compiled twice; filters pick the tests.
NEXTEST=(cargo nextest run --locked --workspace --no-fail-fast)

KAFKA_PORT="${KAFKA_PORT:-19092}"
cleanup() { KAFKA_PORT=$KAFKA_PORT bash "$ROOT/scripts/kafka.sh" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

if want lint; then
  timed "fmt" cargo fmt --all -- --check
  # The fuzz crate is outside the workspace (scripts/fuzz.sh builds it on nightly).
  rustfmt --check --edition 2021 "$ROOT"/fuzz/fuzz_targets/*.rs
  timed "clippy" cargo clippy --locked --workspace --all-targets -- -D warnings
  # Imports point one way (docs/architecture.md, "The code's layers"): no loop among a crate's
  # files but a parent and its child (a module's mod.rs and one of its files).
  for crate in shared-types durable-objects edge-worker regional-core loadtest; do
    python3 "$ROOT/scripts/import_graph.py" "$crate/src" --max-loop 2
  done
  timed "alert rules" bash "$ROOT/scripts/check-alerts.sh"
  timed "kubernetes manifests" "$CACHE/pyenv/bin/python" "$ROOT/scripts/check-k8s.py"
fi
if want host; then
  timed "host tests" "${NEXTEST[@]}" -E 'not package(e2e)'
fi
if want fuzz; then
  timed "fuzz smoke" bash "$ROOT/scripts/fuzz.sh" --smoke all "${FUZZ_SECONDS:-10}"
fi
if want workerd || want e2e; then
  timed "worker build" bash "$ROOT/scripts/build-worker.sh"
fi
if want workerd; then
  timed "edge bundles" bash "$ROOT/scripts/edge-bundle.sh"
  timed "workerd tests" node --test --test-concurrency=1 'tests/workerd/*.test.mjs'
  # The local stand-ins for services that cannot run here, checked with their official clients.
  timed "fakes" node --test --test-concurrency=1 'tests/fakes/*.test.mjs'
fi
if want e2e; then
  timed "binaries build" cargo build --locked -q --workspace --bins
  timed "core image" bash "$ROOT/scripts/image.sh"
  KAFKA_PORT=$KAFKA_PORT timed "kafka start" bash "$ROOT/scripts/kafka.sh" start
  E2E_CORE_BIN="$CARGO_TARGET_DIR/debug/regional-core" E2E_DATABASE_SERVER="$PG_SERVER" \
    E2E_PYTHON="$CACHE/pyenv/bin/python" E2E_SCHEMATHESIS="$CACHE/schemathesis/bin/schemathesis" \
    KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT" TANSU="$TANSU" timed "e2e tests" "${NEXTEST[@]}" -E 'package(e2e)'
fi
log "all tests passed in $(($(date +%s) - started)) s"
