#!/usr/bin/env bash
# COUNT_MODE=approx against exact, both with WINDOWS= (approx has no windows yet), in one run
# (make approx-cost; ROUNDS=5 by default): single entries of fresh random addresses with wrk,
# then bulk batches with examples/batch_ingest; ratios to exact in the same round.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
BASE_PORT=${BASE_PORT:-15900}
OUT=target/approx-cost
die() { echo "approx-cost: $*" >&2; exit 1; }
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load-only
cargo build --release --quiet --bin ip-counter --example batch_ingest
mkdir -p "$OUT"

variant_env() { case "$1" in approx) printf '%s\n' COUNT_MODE=approx WINDOWS= ;; exact) echo WINDOWS= ;; esac; }
(compare_variants "COUNT_MODE=exact against approx, single entries, each a new address" "$BASE_PORT" exact approx)

echo
echo "### Bulk batches, $ROUNDS rounds, ratio to exact in the same round"
echo
bin=target/release/ip-counter
target/release/examples/batch_ingest --rounds "$ROUNDS" --against "$bin?WINDOWS=,$bin?COUNT_MODE=approx&WINDOWS="
