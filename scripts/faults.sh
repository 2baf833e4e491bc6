#!/usr/bin/env bash
# The fault campaign (docs/reliability.md): a sale through the whole stack with one fault injected
# while buyers buy, then the audit, the broker's and the mails' checks, and the time to recover
# (tests/tests/faults.rs). Each fault is one run of a minute or two, on a PostgreSQL cluster, a
# broker and an SMTP server of its own (the machine's shared PostgreSQL is never restarted).
#   scripts/faults.sh                 every fault, one after the other, then the table
#   scripts/faults.sh kafka_down      one fault (postgres_restart, kafka_down, workerd_restart,
#                                     core_killed, replica_lost, smtp_down)
# Rows are kept in $CARGO_TARGET_DIR/faults/<fault>.json; the table is printed from all of them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FAULTS=(postgres_restart kafka_down workerd_restart core_killed replica_lost smtp_down)
picked=("${@:-${FAULTS[@]}}")
for f in "${picked[@]}"; do
  [[ " ${FAULTS[*]} " == *" $f "* ]] || die "unknown fault $f (one of: ${FAULTS[*]})"
done

# A run stopped half-way leaves its services behind (each has a process group of its own, and
# PostgreSQL is daemonized by pg_ctl): stop whatever a run of this script started, PostgreSQL too
# (runuser keeps the environment), and nothing else.
# Bootstrap first, without the marker: the services it may start for the whole machine (the
# private PostgreSQL, Redis) are not this run's to stop.
bash "$ROOT/scripts/bootstrap.sh" --no-fuzz
cleanup() { kill_marked TICKETING_FAULT_RUN $$; remove_orphan_clusters; }
export TICKETING_FAULT_RUN=$$
trap cleanup EXIT
cd "$ROOT"
timed "worker build" bash "$ROOT/scripts/build-worker.sh"
timed "binaries build" cargo build --locked -q --workspace --bins
out="$CARGO_TARGET_DIR/faults"
mkdir -p "$out"
# Every fault picked runs, whatever the one before it did; the table has this run's rows only, and
# the script fails at the end if any fault did.
failed=()
for f in "${picked[@]}"; do
  rm -f "$out/$f.json"
  E2E_CORE_BIN="$CARGO_TARGET_DIR/debug/regional-core" E2E_DATABASE_SERVER="postgres://$PGUSER@$PGHOST:$PGPORT" \
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/postgres" TANSU="$TANSU" \
    timed "fault $f" cargo nextest run --locked --workspace --run-ignored all --no-capture \
    -E "package(e2e) and binary(faults) and test(=$f)" || failed+=("$f")
done

python3 - "$out" "${picked[@]}" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [json.loads((out / (f + ".json")).read_text()) for f in sys.argv[2:] if (out / (f + ".json")).exists()]
print("| fault | recovered after (from the fault) | backlog when back | paid orders | requests failed (5xx or no answer) | buyers turned away (failed, refused, out of time) | events relayed (duplicates) | mails sent (resent) | audit |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    down = " (%d s down)" % r["down_s"] if r["down_s"] else ""
    backlog = r["backlog_at_restore"] if r["backlog_at_restore"] is not None else "—"
    away = "%d, %d, %d" % (r["buyers_failed"], r["buyers_refused"], r["buyers_timed_out"])
    print("| %s (`scripts/faults.sh %s`) | %.1f s%s | %s | %d | %d | %s | %d (%d) | %d (%d) | %s |" % (
        r["what"], r["fault"], r["recovered_after_s"], down, backlog, r["paid_orders"], r["failed_requests"], away,
        r["events_relayed"], r["broker_duplicates"], r["mails_sent"], r["mails_resent"], "clean" if r["audit_clean"] else "FAILED"))
PY
((${#failed[@]} == 0)) || die "faults that failed: ${failed[*]} (their logs are under $CARGO_TARGET_DIR/e2e/)"
