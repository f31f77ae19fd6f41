#!/usr/bin/env bash
# COUNT_MODE=approx against exact, both with the default windows (WINDOWS_OFF=1: both with
# WINDOWS=, off), in one run (make approx-cost; ROUNDS=5 by default):
# single entries of fresh random addresses with wrk, then bulk batches with
# examples/batch_ingest; ratios to exact in the same round.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
# The settings both variants share, as env lines and as batch_ingest's ?VAR=value&.
shared=() query=
if [[ ${WINDOWS_OFF:-} == 1 ]]; then shared=(WINDOWS=) query='WINDOWS=&'; fi
BASE_PORT=${BASE_PORT:-15900}
OUT=target/approx-cost
die() { echo "approx-cost: $*" >&2; exit 1; }
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load-only
cargo build --release --quiet --bin ip-counter --example batch_ingest
mkdir -p "$OUT"

variant_env() {
    if [[ ${#shared[@]} -gt 0 ]]; then printf '%s\n' "${shared[@]}"; fi
    if [[ $1 == approx ]]; then echo COUNT_MODE=approx; fi
}
(compare_variants "COUNT_MODE=exact against approx, single entries, each a new address" "$BASE_PORT" exact approx)

echo
echo "### Bulk batches, $ROUNDS rounds, ratio to exact in the same round"
echo
bin=target/release/ip-counter
target/release/examples/batch_ingest --rounds "$ROUNDS" \
    --against "$bin?${query%&},$bin?${query}COUNT_MODE=approx"
