#!/usr/bin/env bash
# Throughput cost of time windows (issue #12): the release binary with the default WINDOWS
# (5m,1h,24h) against WINDOWS= (off), in one run:
#   1. single entries under `make load-test`'s wrk load (every request a new random IPv4
#      address, without a timestamp: counted at arrival, in every window), in rotating order,
#      on's ratio to off in each round;
#   2. the same with repeats (WRK_POOL=20000: each address is logged again once a step);
#   3. bulk batches (examples/batch_ingest.rs: NDJSON entries timestamped over the last day,
#      and access-log text), off and on in rotating order.
# Persistence is on (buffered) in both, as by default.
#
#   scripts/windows-cost.sh            # ROUNDS=5 (default)
#
# All traffic goes to 127.0.0.1. Raw wrk output is kept in target/windows-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
BASE_PORT=${BASE_PORT:-15600}
OUT=target/windows-cost
die() { echo "windows-cost: $*" >&2; exit 1; }
# shellcheck source=scripts/wrk-lib.sh
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load-only
cargo build --release --quiet --bin ip-counter --example batch_ingest
mkdir -p "$OUT"

variant_env() { case "$1" in off) echo "WINDOWS=" ;; on) : ;; esac; }
# Entries without a timestamp: each counts at arrival, in every window.
export WRK_TIMESTAMP=now
# Each comparison in a subshell, whose exit stops its services.
(compare_variants "Time windows off against on, single entries" "$BASE_PORT" off on)

# Repeats: 20,000 addresses over and over, so that with windows on each is written to the log
# again once a 5 s step (the cost of keeping the windows across restarts).
echo
(
    export WRK_POOL=20000
    compare_variants "Time windows off against on, repeats of 20,000 addresses" \
        $((BASE_PORT + 10)) off on
)

echo
echo "### Bulk batches, $ROUNDS rounds, ratio to WINDOWS= (off) in the same round"
echo
bin=target/release/ip-counter
target/release/examples/batch_ingest --rounds "$ROUNDS" --against "$bin?WINDOWS=,$bin"
