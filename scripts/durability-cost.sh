#!/usr/bin/env bash
# Throughput cost of persistence: the release binary memory-only (PERSISTENCE=off), with the
# default buffered durability and with DURABILITY=fsync, each under the same wrk load as
# `make load-test` (POST /logs, a new random IPv4 address a request, so every request writes
# to the log), in rotating order, each as a ratio to memory-only in the same round.
#
#   scripts/durability-cost.sh                # 3 rounds of 10 s per variant
#   ROUNDS=5 DURATION=20s scripts/durability-cost.sh
#
# All traffic goes to 127.0.0.1; each variant has a fresh data directory under $TMPDIR, removed
# on exit with the services. Raw wrk output is kept in target/durability-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PORT=${BASE_PORT:-15200}
OUT=target/durability-cost

die() { echo "durability-cost: $*" >&2; exit 1; }
# shellcheck source=scripts/wrk-lib.sh
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load-only
cargo build --release --quiet --bin ip-counter
mkdir -p "$OUT"

variant_env() {
    case "$1" in
        memory) echo PERSISTENCE=off ;;
        buffered) echo DURABILITY=buffered ;;
        fsync) echo DURABILITY=fsync ;;
    esac
}
compare_variants "Cost of durability" "$BASE_PORT" memory buffered fsync
