#!/usr/bin/env bash
# Restart time and disk use: writes a data directory of N_IPV4 random IPv4 and N_IPV6 random
# IPv6 addresses (examples/gen_data_dir.rs: 95% in the snapshot, 5% in the log as one frame per
# address), then ROUNDS times starts the release binary on a fresh copy of it and times from
# exec to the first 200 from GET /ready (curl every 10 ms), checking the recovered count.
#
#   scripts/restart-time.sh                   # 10M IPv4 + 1M IPv6, 3 rounds
#   N_IPV4=1000000 N_IPV6=100000 ROUNDS=5 scripts/restart-time.sh
#
# Traffic goes to 127.0.0.1 only; the directories live under $TMPDIR and are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

N_IPV4=${N_IPV4:-10000000}
N_IPV6=${N_IPV6:-1000000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-15300}
die() { echo "restart-time: $*" >&2; exit 1; }

cargo build --release --quiet --bin ip-counter --example gen_data_dir
work=$(mktemp -d "${TMPDIR:-/tmp}/ip-counter-restart.XXXXXX")
pid=""
trap '[ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
echo "restart-time: writing $N_IPV4 IPv4 + $N_IPV6 IPv6 addresses" >&2
target/release/examples/gen_data_dir "$work/data" "$N_IPV4" "$N_IPV6" >&2
total=$((N_IPV4 + N_IPV6))
snapshot=$(stat -c %s "$work/data/snapshot.bin")
logs=$(cat "$work"/data/log-*.bin | wc -c)

times=()
for round in $(seq "$ROUNDS"); do
    rm -rf "$work/copy" && cp -a "$work/data" "$work/copy"
    sync
    start=$(date +%s%N)
    DATA_DIR=$work/copy LOG_PORT=$PORT METRICS_PORT=$((PORT + 1)) SERVER_HOST=127.0.0.1 LOG_LEVEL=warn \
        target/release/ip-counter >"$work/service.log" 2>&1 </dev/null &
    pid=$!
    until curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/ready" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/service.log" >&2; die "the service exited"; }
        [ $(( $(date +%s%N) - start )) -lt 60000000000 ] || die "not ready after 60 s"
        sleep 0.01
    done
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    count=$(curl -fsS "http://127.0.0.1:$PORT/stats" | sed -E 's/.*"unique_ip_addresses":([0-9]+).*/\1/')
    [ "$count" = "$total" ] || die "recovered $count addresses, expected $total"
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid" && wait "$pid" || die "the service did not exit 0 on SIGTERM"
    pid=""
    echo "restart-time: round $round: ready in $ms ms, $count addresses, RSS $((rss / 1024)) MiB" >&2
    times+=("$ms")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')

echo
echo "### Restart ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
echo
echo "| addresses | snapshot bytes | log bytes | bytes per address on disk | start to /ready 200, median of $ROUNDS | rounds (ms) |"
echo "|---:|---:|---:|---:|---:|---|"
printf '| %s IPv4 + %s IPv6 | %s | %s | %.2f | %s ms | %s |\n' "$N_IPV4" "$N_IPV6" "$snapshot" "$logs" \
    "$(awk -v b=$((snapshot + logs)) -v n=$total 'BEGIN {print b / n}')" "$median" "${times[*]}"
