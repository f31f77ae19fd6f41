#!/usr/bin/env bash
# What STORE=redis costs against the local store, on one machine, with a real redis-server on
# 127.0.0.1 (make redis-cost; ROUNDS=5 by default):
#   1. single entries, about 90 % repeats (a pool of 20,000 addresses, 10 % fresh): wrk against
#      STORE=local and STORE=redis in rotating order, ratio to local in the same round;
#   2. bulk new addresses: examples/batch_ingest against both, and redis-benchmark's pipelined
#      SADD on the same Redis as the baseline of what Redis takes at all;
#   3. Redis's memory per address (INFO memory used_memory over the shared count).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
BASE_PORT=${BASE_PORT:-15800}
REDIS_PORT=$((BASE_PORT + 50))
OUT=target/redis-cost
die() { echo "redis-cost: $*" >&2; exit 1; }
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load
cargo build --release --quiet --bin ip-counter --example batch_ingest
mkdir -p "$OUT"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
redis_pid=$!
cli() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 50); do cli ping >/dev/null 2>&1 && break; sleep 0.1; done
cli ping >/dev/null || die "redis-server did not start (see $OUT/redis.log)"

variant_env() { case "$1" in redis) printf '%s\n' STORE=redis "REDIS_URL=redis://127.0.0.1:$REDIS_PORT" REDIS_KEY_PREFIX=wrk ;; local) : ;; esac; }
variant_cleanup() { kill "$redis_pid" 2>/dev/null || true; }

(
    export WRK_POOL=20000 WRK_NEW=0.1 WRK_TIMESTAMP=now
    compare_variants "STORE=local against STORE=redis, single entries, ~90 % repeats" "$BASE_PORT" local redis
    sleep 2
    shared=$(curl -fsS "http://$HOST:$((BASE_PORT + 1))/stats" | sed -E 's/.*"unique_ip_addresses":([0-9]+).*/\1/')
    used=$(cli info memory | awk -F: '/^used_memory:/ {print $2+0}')
    keys=$(cli dbsize)
    echo
    echo "Redis after that run: $shared addresses in $keys keys, used_memory $used bytes: $(awk -v u="$used" -v n="$shared" 'BEGIN {printf "%.1f", u / n}') B an address (includes Redis's own ~1 MB)"
)
kill "$redis_pid" 2>/dev/null || true
wait "$redis_pid" 2>/dev/null || true
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do cli ping >/dev/null 2>&1 && break; sleep 0.1; done

echo
echo "### Bulk new addresses, $ROUNDS rounds (batch_ingest), ratio to STORE=local in the same round"
echo
bin=target/release/ip-counter
target/release/examples/batch_ingest --rounds "$ROUNDS" \
    --against "$bin,$bin?STORE=redis&REDIS_URL=redis://127.0.0.1:$REDIS_PORT&REDIS_KEY_PREFIX=bulk"
echo
echo "Baseline: redis-benchmark -P 100 -t sadd -n 2000000 -r 100000000 (pipelined SADD of random members)"
redis-benchmark -p "$REDIS_PORT" --csv -P 100 -t sadd -n 2000000 -r 100000000
