#!/usr/bin/env bash
# The fuzz targets (fuzz/, cargo-fuzz + libFuzzer on the nightly toolchain; docs/fuzzing.md).
#
#   scripts/fuzz.sh --smoke           every target for 10 s from the repository's inputs only, with a
#                                     fixed seed (the test command's run: the same on every machine)
#   scripts/fuzz.sh                   every target for 10 s
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

TARGETS=(token request_signature payment_signature checkin venue_json seats_csv settings ledger readers hold_body)
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
SMOKE=
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=1
  shift
fi
which=${1:-all}
seconds=${2:-10}
# libFuzzer takes 0 as "no limit"; a day per target is the most a run may ask for.
[[ $seconds =~ ^[1-9][0-9]{0,4}$ ]] && [ "$seconds" -le 86400 ] ||
  die "seconds must be a whole number from 1 to 86400, got $seconds"
if [ "$which" = all ]; then
  run=("${TARGETS[@]}")
else
  printf '%s\n' "${TARGETS[@]}" | grep -qxF -- "$which" || die "no fuzz target $which (scripts/fuzz.sh --list)"
  run=("$which")
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  # Machines of this kind carry one; on a developer's machine without it the smoke run says so
  # loudly rather than fail, but CI (CI=true) fails: a green run must have fuzzed.
  if [ -n "$SMOKE" ] && [ "${CI:-}" != true ]; then
    log "warning: no nightly toolchain: the fuzz smoke run is SKIPPED"
    exit 0
  fi
  die "fuzzing needs the nightly toolchain (rustup toolchain list); this machine has none"
fi
command -v cargo-fuzz >/dev/null || die "cargo-fuzz is missing: run scripts/bootstrap.sh"

FUZZ="$CACHE/fuzz"
mkdir -p "$FUZZ"
# Every clone's fuzz builds share this directory, and their binaries one path: a long run beside a
# clone's test command gives itself another (FUZZ_TARGET_DIR=...).
TARGET_DIR="${FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
# Built once for every target, with debug assertions and overflow checks, without a sanitizer: the
# code under test is safe Rust, so what a fuzzer can find is a panic, an overflow, a broken
# invariant or a hang, not a memory error (docs/fuzzing.md).
FUZZ_BUILD=(cargo +nightly fuzz build --fuzz-dir "$ROOT/fuzz" -s none --debug-assertions --target-dir "$TARGET_DIR")
timed "fuzz build" "${FUZZ_BUILD[@]}"

for target in "${run[@]}"; do
  corpus="$FUZZ/corpus/$target" artifacts="$FUZZ/artifacts/$target/" out="$FUZZ/$target.log"
  extra=()
  if [ -n "$SMOKE" ]; then
    # Not this machine's corpus: a scratch one, and a fixed seed.
    corpus=$(mktemp -d) out="$FUZZ/$target.smoke.log"
    extra=(-seed=1)
  fi
  mkdir -p "$corpus" "$artifacts"
  before=$(ls "$artifacts" | wc -l)
  dirs=("$corpus")
  for d in "$ROOT/fuzz/seeds/$target" "$ROOT/fuzz/regressions/$target"; do [ -d "$d" ] && dirs+=("$d"); done
  log "fuzz $target for $seconds s"
  if ! cargo +nightly fuzz run --fuzz-dir "$ROOT/fuzz" -s none --debug-assertions \
    --target-dir "$TARGET_DIR" "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -artifact_prefix="$artifacts" -print_final_stats=1 "${extra[@]}" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    [ "$(ls "$artifacts" | wc -l)" -gt "$before" ] || die "fuzz target $target failed without a crash input (build or run error above)"
    crash=$(ls -t "$artifacts" | head -n 1)
    die "fuzz target $target failed; input: $artifacts$crash
  replay: cargo +nightly fuzz run --fuzz-dir fuzz -s none --debug-assertions --target-dir $TARGET_DIR $target $artifacts$crash
  keep it: copy it to fuzz/regressions/$target/ with the fix and its unit test"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$out" | tail -n 1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$out" | tail -n 1 | cut -d' ' -f2)
  size=$(find "$corpus" -type f | wc -l)
  [ -z "$SMOKE" ] || rm -rf "$corpus"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$size" >>"$FUZZ/runs.tsv"
  log "fuzz $target: ${execs:-?} runs, coverage ${cov:-?} edges (${ft:-?} features), corpus $size"
done
