#!/usr/bin/env bash
# Load test: the service's POST /logs against a bare hyper server (examples/bare_hyper.rs) that
# does the same HTTP work and nothing else, measured alternately with wrk on this machine.
#
#   scripts/load-test.sh                      # 3 rounds of 10 s per server
#   ROUNDS=5 DURATION=30s scripts/load-test.sh
#
# Settings (environment): ROUNDS (3), DURATION (10s), CONNECTIONS (64), THREADS (1),
# SERVICE_PORT (15000), METRICS_PORT (19102), BARE_PORT (15001), BARE_WORKERS (1: the bare
# server's worker threads, the service's own model), SERVICE_CMD (the command that
# starts the service side; default target/release/ip-counter, configured through the environment).
#
# Every request carries a new random IPv4 address (scripts/random-ip.lua). Output: a Markdown
# table per round and the medians, then the service's memory growth per unique address.
# All traffic goes to 127.0.0.1; both servers are stopped on exit. Raw wrk output and server logs
# are kept in target/load-test/.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICE_PORT=${SERVICE_PORT:-15000}
METRICS_PORT=${METRICS_PORT:-19102}
BARE_PORT=${BARE_PORT:-15001}
# One worker is the strongest bare server on this 2-core machine with wrk beside it (README,
# Performance): the baseline is the fastest plain hyper server, not one the service beats.
BARE_WORKERS=${BARE_WORKERS:-1}
OUT=target/load-test

die() { echo "load-test: $*" >&2; exit 1; }
trap 'echo "load-test: failed (line $LINENO: $BASH_COMMAND)" >&2' ERR
# shellcheck source=scripts/wrk-lib.sh
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load-only

echo "load-test: building (cargo build --release --bin ip-counter --example bare_hyper)" >&2
cargo build --release --quiet --bin ip-counter --example bare_hyper

mkdir -p "$OUT"
for port in "$SERVICE_PORT" "$METRICS_PORT" "$BARE_PORT"; do
    if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
        die "port $HOST:$port is already in use; stop what listens there or set SERVICE_PORT/METRICS_PORT/BARE_PORT"
    fi
done

service_pid=""
bare_pid=""
data_dir=$(mktemp -d "${TMPDIR:-/tmp}/ip-counter-load.XXXXXX")
stop() {
    local pid status
    for pid in $service_pid $bare_pid; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        status=0
        wait "$pid" 2>/dev/null || status=$?
        if [ "$pid" = "$service_pid" ] && [ "$status" != 0 ]; then
            echo "load-test: warning, the service exited with status $status after SIGTERM (expected 0)" >&2
        fi
    done
    rm -rf "$data_dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

if [ -n "${SERVICE_CMD:-}" ]; then
    # shellcheck disable=SC2086 # SERVICE_CMD is a command line on purpose
    LOG_PORT=$SERVICE_PORT METRICS_PORT=$METRICS_PORT SERVER_HOST=$HOST LOG_LEVEL=warn \
        $SERVICE_CMD >"$OUT/service.log" 2>&1 </dev/null &
else
    # A fresh data directory per run, so the count starts at zero and nothing lands in ./data.
    DATA_DIR=$data_dir LOG_PORT=$SERVICE_PORT METRICS_PORT=$METRICS_PORT SERVER_HOST=$HOST \
        LOG_LEVEL=warn target/release/ip-counter >"$OUT/service.log" 2>&1 </dev/null &
fi
service_pid=$!
target/release/examples/bare_hyper "$HOST:$BARE_PORT" --workers "$BARE_WORKERS" >"$OUT/bare.log" 2>&1 </dev/null &
bare_pid=$!

# wait_ready NAME PID CURL-ARGS...: polls for up to 30 s while the process is alive.
wait_ready() {
    local name=$1 pid=$2
    shift 2
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { cat "$OUT/$name.log" >&2; die "$name exited before it was ready (log above)"; }
        curl -fsS -o /dev/null --max-time 1 "$@" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$OUT/$name.log" >&2
    die "$name not ready after 30 s (log above)"
}
wait_ready service "$service_pid" "http://$HOST:$SERVICE_PORT/ready"
wait_ready bare "$bare_pid" -X POST -H 'Content-Type: application/json' \
    --data '{"timestamp":"2024-01-01T00:00:00Z","ip":"192.0.2.1","url":"/"}' "http://$HOST:$BARE_PORT/logs"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
stats() { curl -fsS --max-time 5 "http://$HOST:$SERVICE_PORT/stats" 2>/dev/null || true; }
json_num() { { grep -o "\"$1\":[0-9]*" || true; } | head -n 1 | cut -d: -f2; }

rss_before=$(rss_kib "$service_pid")
unique_before=$(stats | json_num unique_ip_addresses)

bench() { wrk_rps "$1" "http://$HOST:$2/logs" "$3"; }

echo "load-test: $ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d${dur_s}s per server, alternating order" >&2
rows=()
svc_all=()
bare_all=()
ratio_all=()
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
        svc=$(bench service "$SERVICE_PORT" "$round")
        bare=$(bench bare "$BARE_PORT" "$round")
        order="service, bare"
    else
        bare=$(bench bare "$BARE_PORT" "$round")
        svc=$(bench service "$SERVICE_PORT" "$round")
        order="bare, service"
    fi
    ratio=$(awk -v s="$svc" -v b="$bare" 'BEGIN {printf "%.3f", s / b}')
    echo "load-test: round $round ($order): service $svc req/s, bare $bare req/s, ratio $ratio" >&2
    rows+=("| $round ($order) | $(printf '%.0f' "$svc") | $(p99 service "$round") | $(printf '%.0f' "$bare") | $(p99 bare "$round") | $ratio |")
    svc_all+=("$svc")
    bare_all+=("$bare")
    ratio_all+=("$ratio")
done

rss_after=$(rss_kib "$service_pid")
stats_after=$(stats)
unique_after=$(printf '%s' "$stats_after" | json_num unique_ip_addresses)
estimated=$(printf '%s' "$stats_after" | json_num estimated_memory_usage_bytes)

svc_med=$(printf '%s\n' "${svc_all[@]}" | median)
bare_med=$(printf '%s\n' "${bare_all[@]}" | median)
ratio_med=$(printf '%s\n' "${ratio_all[@]}" | median)

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "### Load test ($(date -u +%Y-%m-%d), $(nproc) CPUs${cpu:+, $cpu}, load average $(cut -d" " -f1 /proc/loadavg) at the end)"
echo
echo "\`wrk -t$THREADS -c$CONNECTIONS -d${dur_s}s -s scripts/random-ip.lua\`, POST /logs with a new random IPv4 address per request,"
echo "service and bare hyper baseline (examples/bare_hyper.rs) alternately, $ROUNDS rounds, all on one machine."
echo
echo "| round (order) | service req/s | service p99 | bare req/s | bare p99 | service/bare |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
printf '| **median** | **%.0f** | | **%.0f** | | **%.3f** |\n' "$svc_med" "$bare_med" "$ratio_med"
echo

if [ -n "$unique_after" ] && [ -n "$rss_before" ] && [ -n "$rss_after" ]; then
    added=$((unique_after - ${unique_before:-0}))
    per_ip() { if [ "$added" -gt 0 ]; then awk -v b="$1" -v n="$added" 'BEGIN {printf "%.1f", b / n}'; else echo "n/a"; fi; }
    echo "| unique addresses | service RSS before | RSS after | RSS growth per new address | estimated_memory_usage_bytes per address |"
    echo "|---:|---:|---:|---:|---:|"
    est_per=$(if [ -n "$estimated" ] && [ "$unique_after" -gt 0 ]; then awk -v b="$estimated" -v n="$unique_after" 'BEGIN {printf "%.1f B", b / n}'; else echo "n/a"; fi)
    printf '| %d | %.1f MiB | %.1f MiB | %s B | %s |\n' "$unique_after" \
        "$(awk -v k="$rss_before" 'BEGIN {print k / 1024}')" "$(awk -v k="$rss_after" 'BEGIN {print k / 1024}')" \
        "$(per_ip $(( (rss_after - rss_before) * 1024 )))" "$est_per"
    echo
    echo "RSS growth includes allocator slack and the capacity a hash set reserves ahead of its size, so it moves in steps."
else
    echo "service memory: /stats gave no unique_ip_addresses (RSS before ${rss_before:-?} KiB, after ${rss_after:-?} KiB)"
fi
