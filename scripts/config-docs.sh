#!/usr/bin/env bash
# Writes docs/configuration.md's tables again from the code's definitions of every setting (the
# core's command line, the edge's settings table). The test command checks that they are current.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
UPDATE_CONFIG_DOCS=1 cargo nextest run --locked --workspace --no-fail-fast --test-threads 1 \
  -E 'test(the_configuration_reference_is_current) | test(the_documented_table_is_current)'
git --no-pager diff --stat -- docs/configuration.md
