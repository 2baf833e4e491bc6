#!/usr/bin/env bash
# The alert rules (infra/prometheus/alerts.yml): valid (promtool check rules) and each one firing
# on the series that should fire it and not on healthy ones (promtool test rules); they and the
# Grafana dashboard (infra/grafana/ticketing.json) name only metrics the core exports.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/infra/prometheus"
promtool check rules alerts.yml
promtool test rules alerts.test.yml
python3 "$ROOT/scripts/check-dashboard.py"
