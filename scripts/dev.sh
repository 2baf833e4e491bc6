#!/usr/bin/env bash
# The run command: the whole stack on this machine.
#   edge (Worker + Durable Objects in workerd, via wrangler dev)  http://127.0.0.1:8787
#   regional core (against PostgreSQL, migrations applied)        http://127.0.0.1:8080
#   mail sink (a real SMTP server keeping what the core sends)     http://127.0.0.1:8025
#   local Twilio (texts the core sends, their delivery reports)    http://127.0.0.1:13111/_fake/messages
# Domain events go from the outbox to their consumers in the core's process (no broker needed);
# set KAFKA_BOOTSTRAP to relay them through a Kafka-protocol broker instead (with
# KAFKA_REPLICATION_FACTOR=1 for a single local broker).
# PAYMENT_PROVIDER=stripe pays through the local Stripe (scripts/fake-stripe.mjs: Checkout Sessions
# and their hosted page, on STRIPE_PORT, default 12111) instead of the built-in test provider.
# Ctrl-C stops everything it started. EDGE_PORT / CORE_PORT / MAIL_PORT / DATABASE_URL override the defaults.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EDGE_PORT="${EDGE_PORT:-8787}"
CORE_PORT="${CORE_PORT:-8080}"
METRICS_PORT="${METRICS_PORT:-9464}"
MAIL_PORT="${MAIL_PORT:-8025}"
SMTP_PORT="${SMTP_PORT:-1025}"
STRIPE_PORT="${STRIPE_PORT:-12111}"
TWILIO_PORT="${TWILIO_PORT:-13111}"
PAYMENT_PROVIDER="${PAYMENT_PROVIDER:-testpay}"
case $PAYMENT_PROVIDER in testpay | stripe) ;; *) die "PAYMENT_PROVIDER is testpay or stripe" ;; esac
export DATABASE_URL="${DATABASE_URL:-postgres://$PGUSER@$PGHOST:$PGPORT/ticketing}"

bash "$ROOT/scripts/bootstrap.sh" --no-kafka --no-browser --no-fuzz
bash "$ROOT/scripts/dev-keys.sh"
for port in "$EDGE_PORT" "$CORE_PORT" "$METRICS_PORT" "$MAIL_PORT" "$SMTP_PORT" "$TWILIO_PORT"; do
  port_open "$port" && die "port $port is already in use (another dev.sh?); set EDGE_PORT / CORE_PORT / METRICS_PORT / MAIL_PORT / SMTP_PORT / TWILIO_PORT"
done
bash "$ROOT/scripts/build-worker.sh"
timed "cargo build regional-core" cargo build -q -p regional-core
mkdir -p "$LOCAL/logs"

PIDS=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  log "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

log "starting the mail sink: SMTP on 127.0.0.1:$SMTP_PORT, mailbox http://127.0.0.1:$MAIL_PORT"
(exec setsid node "$ROOT/scripts/smtp-sink.mjs" --port "$SMTP_PORT" --http "$MAIL_PORT" --dir "$LOCAL/mail") \
  >"$LOCAL/logs/mail.log" 2>&1 </dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$MAIL_PORT/messages" 20 || { tail -n 30 "$LOCAL/logs/mail.log"; die "the mail sink did not start"; }

if [ "$PAYMENT_PROVIDER" = stripe ]; then
  port_open "$STRIPE_PORT" && die "port $STRIPE_PORT is already in use; set STRIPE_PORT"
  # Keys for the local Stripe only, new at each start.
  STRIPE_SECRET_KEY="sk_test_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  STRIPE_WEBHOOK_SECRETS="whsec_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  export STRIPE_SECRET_KEY STRIPE_WEBHOOK_SECRETS
  log "starting the local Stripe on 127.0.0.1:$STRIPE_PORT"
  (exec setsid node "$ROOT/scripts/fake-stripe.mjs" --port "$STRIPE_PORT" --key "$STRIPE_SECRET_KEY" \
    --webhook "http://127.0.0.1:$CORE_PORT/api/v1/webhooks/stripe" --webhook-secret "$STRIPE_WEBHOOK_SECRETS") \
    >"$LOCAL/logs/stripe.log" 2>&1 </dev/null &
  PIDS+=($!)
  for _ in $(seq 1 100); do port_open "$STRIPE_PORT" && break; sleep 0.1; done
  port_open "$STRIPE_PORT" || { tail -n 30 "$LOCAL/logs/stripe.log"; die "the local Stripe did not start"; }
fi

# Texts through the local Twilio: an account of its own, new at each start. Reply as a buyer with
# curl -d '{"from":"+447700900123","body":"STOP"}' http://127.0.0.1:$TWILIO_PORT/_fake/reply
TWILIO_ACCOUNT_SID="AC$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
TWILIO_AUTH_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export TWILIO_ACCOUNT_SID TWILIO_AUTH_TOKEN
log "starting the local Twilio on 127.0.0.1:$TWILIO_PORT"
(exec setsid node "$ROOT/scripts/fake-twilio.mjs" --port "$TWILIO_PORT" --sid "$TWILIO_ACCOUNT_SID" \
  --token "$TWILIO_AUTH_TOKEN" --incoming "http://127.0.0.1:$CORE_PORT/api/v1/sms/incoming") \
  >"$LOCAL/logs/twilio.log" 2>&1 </dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$TWILIO_PORT/_fake/messages" 20 || { tail -n 30 "$LOCAL/logs/twilio.log"; die "the local Twilio did not start"; }

log "starting the regional core on 127.0.0.1:$CORE_PORT (logs: $LOCAL/logs/core.log)"
(
  set -a && source "$LOCAL/core.env" && set +a
  export EDGE_URL="http://127.0.0.1:$EDGE_PORT"
  export SMTP_URL="${SMTP_URL:-smtp://127.0.0.1:$SMTP_PORT}"
  export CORE_PUBLIC_URL="http://127.0.0.1:$CORE_PORT"
  # Local development: the built-in test provider (its pages mark any order paid), or the local
  # Stripe. Never in production.
  export CORE_DEV_MODE=true
  # Partner webhooks to local receivers (http://127.0.0.1:…): development only (docs/webhooks.md).
  export CORE_WEBHOOK_ALLOW_PRIVATE=true
  export PAYMENT_PROVIDER BUYER_URL="http://127.0.0.1:$EDGE_PORT"
  [ "$PAYMENT_PROVIDER" != stripe ] || export STRIPE_API_BASE="http://127.0.0.1:$STRIPE_PORT"
  export SMS_API_BASE="http://127.0.0.1:$TWILIO_PORT" SMS_FROM="+15005550006"
  export CORE_METRICS_LISTEN="127.0.0.1:$METRICS_PORT"
  exec setsid "$CARGO_TARGET_DIR/debug/regional-core" serve --listen "127.0.0.1:$CORE_PORT"
) >"$LOCAL/logs/core.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$CORE_PORT/healthz" 60 || { tail -n 30 "$LOCAL/logs/core.log"; die "the core did not start"; }

log "starting the edge (wrangler dev) on 127.0.0.1:$EDGE_PORT (logs: $LOCAL/logs/edge.log)"
(
  cd "$ROOT"
  exec setsid wrangler dev --ip 127.0.0.1 --port "$EDGE_PORT" --inspector-port 0 \
    --persist-to "$LOCAL/wrangler-state" --env-file "$LOCAL/edge.env" \
    --var "CORE_URL:http://127.0.0.1:$CORE_PORT" --show-interactive-dev-session=false --log-level info
) >"$LOCAL/logs/edge.log" 2>&1 </dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$EDGE_PORT/healthz" 90 || { tail -n 30 "$LOCAL/logs/edge.log"; die "the edge did not start"; }

# The demo: an organization, a venue and an event whose sale starts a minute after it was first
# seeded; the core pushes it to the edge (waited for here, so the buyer's URL works when printed).
# It is pushed again every time: this edge's storage may be new (another clone, a reset of
# .local/wrangler-state) while the database remembers the demo as synced.
demo=$("$CARGO_TARGET_DIR/debug/regional-core" seed-demo 2>>"$LOCAL/logs/core.log") || die "seeding the demo failed"
demo_event=$(printf '%s' "$demo" | python3 -c 'import json,sys; print(json.load(sys.stdin)["event"])')
demo_key=$(printf '%s' "$demo" | python3 -c 'import json,sys; print(json.load(sys.stdin)["organizer_key"])')
demo_sale=$(printf '%s' "$demo" | python3 -c 'import json,sys; print(json.load(sys.stdin)["on_sale_at"])')
# A demo with orders is never pushed afresh (its sales live at the edge: docs/runbook.md); drop the
# database (DATABASE_URL) for a new demo then.
"$CARGO_TARGET_DIR/debug/regional-core" republish --event "$demo_event" >/dev/null 2>>"$LOCAL/logs/core.log" ||
  log "the demo has orders: not pushed again (if its page answers 'no such event', see docs/runbook.md)"
for _ in $(seq 1 60); do
  curl -sf -H "authorization: Bearer $demo_key" "http://127.0.0.1:$CORE_PORT/api/v1/events/$demo_event/sync" |
    grep -q '"state":"synced"' && break
  sleep 0.5
done

cat <<MSG

  demo sale          http://127.0.0.1:$EDGE_PORT/events/$demo_event   (on sale at $demo_sale)
  demo organizer key $demo_key
                     (admin API: curl -H "authorization: Bearer \$KEY" http://127.0.0.1:$CORE_PORT/api/v1/events)

  edge (buyers)      http://127.0.0.1:$EDGE_PORT
  health chain       http://127.0.0.1:$EDGE_PORT/healthz
  organizer dashboard http://127.0.0.1:$CORE_PORT/dashboard/events/$demo_event   (sign in with the key above)
  regional core      http://127.0.0.1:$CORE_PORT   (/healthz, /readyz)
  metrics            http://127.0.0.1:$METRICS_PORT/metrics   (operators only: its own listener)
  mail sent          http://127.0.0.1:$MAIL_PORT   (every mail the core sent, as received over SMTP)
  texts sent         http://127.0.0.1:$TWILIO_PORT/_fake/messages   (the local Twilio: texts and their reports)
  database           ${DATABASE_URL%%\?*}
  logs               $LOCAL/logs/

MSG
curl -s "http://127.0.0.1:$EDGE_PORT/healthz" || true
printf '\n\nPress Ctrl-C to stop.\n'

# Stay up while all run; if one exits, stop the others and say so.
set +e
wait -n "${PIDS[@]}"
log "a service exited; see $LOCAL/logs/"
exit 1
