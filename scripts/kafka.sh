#!/usr/bin/env bash
# The Kafka-protocol broker for tests: tansu with SQLite storage, loopback only, a fresh empty
# store on every start. Installed by scripts/bootstrap.sh.
#   scripts/kafka.sh start   listen on 127.0.0.1:$KAFKA_PORT (default 19092), wait until ready
#   scripts/kafka.sh stop    stop the broker that 'start' started
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_PORT="${KAFKA_PORT:-19092}"
RUN_DIR="${TMPDIR:-/tmp}/ticketing-kafka-$KAFKA_PORT"

start() {
  [ -x "$TANSU" ] || die "tansu is not installed: run scripts/bootstrap.sh"
  if [ -f "$RUN_DIR/tansu.pid" ] && kill -0 "$(cat "$RUN_DIR/tansu.pid")" 2>/dev/null; then
    log "kafka: already running on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  port_open "$KAFKA_PORT" && die "kafka: port $KAFKA_PORT is taken by something else"
  rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  # sqlite:// paths are relative to the working directory. (memory:// loses data on resume.)
  (cd "$RUN_DIR" && RUST_LOG="${RUST_LOG:-warn}" exec setsid "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine sqlite://tansu.db </dev/null >"$RUN_DIR/tansu.log" 2>&1) &
  echo $! >"$RUN_DIR/tansu.pid"
  for _ in $(seq 1 100); do
    if port_open "$KAFKA_PORT"; then
      log "kafka: tansu up on 127.0.0.1:$KAFKA_PORT"
      return 0
    fi
    kill -0 "$(cat "$RUN_DIR/tansu.pid")" 2>/dev/null || { cat "$RUN_DIR/tansu.log"; die "kafka: tansu exited"; }
    sleep 0.1
  done
  cat "$RUN_DIR/tansu.log"
  die "kafka: tansu not ready on port $KAFKA_PORT"
}

stop() {
  [ -f "$RUN_DIR/tansu.pid" ] || return 0
  local pid
  pid=$(cat "$RUN_DIR/tansu.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$RUN_DIR"
  log "kafka: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
