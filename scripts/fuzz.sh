#!/usr/bin/env bash
# The fuzz targets (fuzz/, cargo-fuzz + libFuzzer on the nightly toolchain; docs/fuzzing.md).
#
#   scripts/fuzz.sh                   every target for 10 s (the smoke run the test command makes)
#   scripts/fuzz.sh all 600           every target for 10 minutes, one after the other
#   scripts/fuzz.sh ledger 3600       one target for an hour
#   scripts/fuzz.sh --list            the targets
#
# Each run starts from the corpus kept on this machine ($CACHE/fuzz/corpus/<target>, grown by
# earlier runs) plus the seeds and the regressions in the repository (fuzz/seeds, fuzz/regressions:
# every input that once crashed a target, replayed first by every run). A crash stops the run and
# fails it: the input is saved under $CACHE/fuzz/artifacts/<target>/ and the line to replay it is
# printed. Each target's executions and coverage are appended to $CACHE/fuzz/runs.tsv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGETS=(token request_signature payment_signature checkin venue_json seats_csv settings ledger)
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
which=${1:-all}
seconds=${2:-10}
[[ $seconds =~ ^[0-9]+$ ]] || die "seconds must be a whole number, got $seconds"
if [ "$which" = all ]; then
  run=("${TARGETS[@]}")
else
  printf '%s\n' "${TARGETS[@]}" | grep -qx "$which" || die "no fuzz target $which (scripts/fuzz.sh --list)"
  run=("$which")
fi

rustup run nightly rustc --version >/dev/null 2>&1 ||
  die "fuzzing needs the nightly toolchain (rustup toolchain list); this machine has none"
command -v cargo-fuzz >/dev/null || die "cargo-fuzz is missing: run scripts/bootstrap.sh"

FUZZ="$CACHE/fuzz"
mkdir -p "$FUZZ"
# Built once for every target, with debug assertions and overflow checks, without a sanitizer: the
# code under test is safe Rust, so what a fuzzer can find is a panic, an overflow, a broken
# invariant or a hang, not a memory error (docs/fuzzing.md).
FUZZ_BUILD=(cargo +nightly fuzz build --fuzz-dir "$ROOT/fuzz" -s none --debug-assertions --target-dir "$CACHE/fuzz-target")
timed "fuzz build" "${FUZZ_BUILD[@]}"

for target in "${run[@]}"; do
  corpus="$FUZZ/corpus/$target" artifacts="$FUZZ/artifacts/$target/" out="$FUZZ/$target.log"
  mkdir -p "$corpus" "$artifacts"
  dirs=("$corpus")
  for d in "$ROOT/fuzz/seeds/$target" "$ROOT/fuzz/regressions/$target"; do [ -d "$d" ] && dirs+=("$d"); done
  log "fuzz $target for $seconds s"
  if ! cargo +nightly fuzz run --fuzz-dir "$ROOT/fuzz" -s none --debug-assertions \
    --target-dir "$CACHE/fuzz-target" "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -artifact_prefix="$artifacts" -print_final_stats=1 >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    crash=$(ls -t "$artifacts" 2>/dev/null | head -n 1)
    die "fuzz target $target failed; input: $artifacts$crash
  replay: cargo +nightly fuzz run --fuzz-dir fuzz -s none --debug-assertions --target-dir $CACHE/fuzz-target $target $artifacts$crash
  keep it: copy it to fuzz/regressions/$target/ with the fix and its unit test"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$out" | tail -n 1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$out" | tail -n 1 | cut -d' ' -f2)
  size=$(find "$corpus" -type f | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$size" >>"$FUZZ/runs.tsv"
  log "fuzz $target: ${execs:-?} runs, coverage ${cov:-?} edges (${ft:-?} features), corpus $size"
done
