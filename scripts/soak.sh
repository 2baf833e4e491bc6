#!/usr/bin/env bash
# The soak (docs/reliability.md, "Soak"): a steady sale of 3 buyers a second for 30 minutes
# through the whole stack (tests/tests/soak.rs), sampling memory, backlog and latency, then the
# audit and the flatness checks. About 40 minutes in all.
#   scripts/soak.sh            the 30-minute soak
#   SOAK_SECONDS=1260 scripts/soak.sh  a shorter one (21 minutes at least); SOAK_RATE=6 a heavier one (buyers a second)
# The figures are kept in $CARGO_TARGET_DIR/soak/soak.json and the chart in soak.svg; the table
# of docs/reliability.md is printed from them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Stop whatever a stopped run left behind (services have process groups of their own, PostgreSQL is
# daemonized by pg_ctl): every process carrying this run's marker.
# Bootstrap first, without the marker: the services it may start for the whole machine (the
# private PostgreSQL, Redis) are not this run's to stop.
bash "$ROOT/scripts/bootstrap.sh" --no-fuzz
cleanup() { kill_marked TICKETING_SOAK_RUN $$; remove_orphan_clusters; }
export TICKETING_SOAK_RUN=$$
trap cleanup EXIT
cd "$ROOT"
timed "worker build" bash "$ROOT/scripts/build-worker.sh"
timed "binaries build" cargo build --locked -q --workspace --bins
out="$CARGO_TARGET_DIR/soak"
mkdir -p "$out"
rm -f "$out/soak.json" "$out/soak.svg"
E2E_CORE_BIN="$CARGO_TARGET_DIR/debug/regional-core" E2E_DATABASE_SERVER="postgres://$PGUSER@$PGHOST:$PGPORT" \
  DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/postgres" TANSU="$TANSU" SOAK_SECONDS="${SOAK_SECONDS:-1800}" \
  timed "soak" cargo nextest run --locked --workspace --run-ignored all --no-capture \
  -E 'package(e2e) and binary(soak) and test(=soak_30_minutes)' || status=$?

# The table, from the figures the test wrote before its checks (so a failed soak has one too).
[[ -f "$out/soak.json" ]] || die "the soak wrote no figures (its logs are under $CARGO_TARGET_DIR/e2e/)"
python3 - "$out/soak.json" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
print("%d buyers over %.0f s, %s paid, %s tickets, %s requests" % (
    f["buyers"], f["seconds"], f["paid"], f["tickets_sold"], f["requests"]))
print("| figure | middle third (mean) | last third (mean) | change | trend over both (an hour) | largest |")
print("| --- | --- | --- | --- | --- | --- |")
for key, v in f["flat"].items():
    fmt = lambda x: "—" if x is None else ("%.1f" % x)
    change = "—" if v.get("growth") is None else "%+.1f %%" % (100 * v["growth"])
    trend = "—" if v.get("per_hour") is None else "%+.1f" % v["per_hour"]
    print("| %s | %s | %s | %s | %s | %s |" % (key, fmt(v["middle"]), fmt(v["last"]), change, trend, fmt(v.get("max"))))
PY
echo "chart: $out/soak.svg"
exit "${status:-0}"
