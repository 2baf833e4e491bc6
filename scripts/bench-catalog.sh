#!/usr/bin/env bash
# The public catalog's search with series (docs/benchmarks.md, "The catalog with series"): a
# scratch database with every migration, 5,000 one-off events and 10 series of 2,000 dates each,
# all listed; the search's first page (25) timed with and without `one_per_series`, and the count
# of each series' listed dates. The SQL mirrors regional-core/src/catalog.rs (`search`,
# `count_dates`): change both together.
#   bash scripts/bench-catalog.sh      (PostgreSQL on 127.0.0.1:5432, trust auth)
set -euo pipefail
cd "$(dirname "$0")/.."
PG=(psql -q -v ON_ERROR_STOP=1 -U postgres -h 127.0.0.1)
DB=catalog_bench
"${PG[@]}" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" 2>/dev/null
for f in $(ls regional-core/migrations/*.sql | grep -v '\.down\.sql$' | sort); do
  "${PG[@]}" -d "$DB" -f "$f" >/dev/null
done
"${PG[@]}" -d "$DB" -f loadtest/sql/catalog-series-data.sql >/dev/null
"${PG[@]}" -d "$DB" -f loadtest/sql/catalog-series-queries.sql | grep -E '^Time' | awk '
  { t[NR] = $2 }
  END {
    split("search (every date)|search (one_per_series)|search q=Template (one_per_series)|count_dates (10 series)|search before series", name, "|")
    for (q = 0; q < 5; q++) {
      n = 0; for (i = q * 5 + 1; i <= q * 5 + 5; i++) v[++n] = t[i]
      asort(v); printf "%-36s median %6.2f ms (5 runs, first %6.2f ms)\n", name[q + 1], v[3], t[q * 5 + 1]
    }
  }'
"${PG[@]}" -c "DROP DATABASE $DB"
