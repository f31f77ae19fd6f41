#!/usr/bin/env bash
# Bulk-ingest benchmarks (issue 3), every ratio from one run on this machine:
#   1. examples/batch_ingest.rs: NDJSON / text / gzip batches over HTTP vs an in-process baseline;
#   2. `ip-counter count` on a generated combined-format log (≥ 1 GB, under /tmp) vs
#      `cut -d' ' -f1 | sort -u | wc -l` (same answer checked), its gzip rate, and GoAccess.
#
#   scripts/bench-batch.sh [LINES]     # default 8,000,000 lines ≈ 1.5 GB; ROUNDS=3
#   GOACCESS=1 scripts/bench-batch.sh  # also GoAccess, once (about 14 minutes for 8M lines)
#
# GoAccess is the Debian package goaccess (`apt-get install goaccess`), not a test dependency.
set -euo pipefail

lines=${1:-8000000}
rounds=${ROUNDS:-3}
dir=${BENCH_DIR:-/tmp/ip-counter-bench}
mkdir -p "$dir"
log=$dir/access-$lines.log

cargo build --release --quiet --bin ip-counter --example batch_ingest --example gen_access_log
bin=target/release/ip-counter

echo "== HTTP batches (examples/batch_ingest.rs)"
target/release/examples/batch_ingest --rounds "$rounds"

if [ ! -s "$log" ]; then
    echo "== generating $log"
    target/release/examples/gen_access_log "$log" "$lines"
fi
[ -s "$log.gz" ] || gzip -1 -k -c "$log" >"$log.gz"
echo "== count: $(du -h "$log" | cut -f1) log, $lines lines; $(du -h "$log.gz" | cut -f1) gzip"
cat "$log" >/dev/null # into the page cache for every contender alike

seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >"$dir/out" 2>/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times
for ((r = 1; r <= rounds; r++)); do
    times[count]+="$(seconds "$bin" count "$log") "
    ours=$(cat "$dir/out")
    times[count_gz]+="$(seconds "$bin" count "$log.gz") "
    [ "$(cat "$dir/out")" = "$ours" ] || { echo "count of the .gz differs" >&2; exit 1; }
    times[cut_sort]+="$(seconds bash -c "cut -d' ' -f1 '$log' | sort -u | wc -l") "
    theirs=$(tr -d ' ' <"$dir/out")
    [ "$theirs" = "$ours" ] || { echo "cut|sort says $theirs, ip-counter count says $ours" >&2; exit 1; }
    times[cut_sort_c]+="$(seconds bash -c "LC_ALL=C cut -d' ' -f1 '$log' | LC_ALL=C sort -u | wc -l") "
done
m() { tr ' ' '\n' <<<"${times[$1]}" | grep . | median; }
count=$(m count)
printf '%-44s %8s s  %6.1f M lines/s\n' "ip-counter count" "$count" "$(echo "$lines / $count / 1000000" | bc -l)"
printf '%-44s %8s s  %6.1f M lines/s\n' "ip-counter count (.gz)" "$(m count_gz)" "$(echo "$lines / $(m count_gz) / 1000000" | bc -l)"
printf '%-44s %8s s  %6.1fx ip-counter count\n' "cut -d' ' -f1 | sort -u | wc -l (LANG=${LANG:-})" "$(m cut_sort)" "$(echo "$(m cut_sort) / $count" | bc -l)"
printf '%-44s %8s s  %6.1fx ip-counter count\n' "the same with LC_ALL=C" "$(m cut_sort_c)" "$(echo "$(m cut_sort_c) / $count" | bc -l)"
echo "distinct addresses: $ours (both agree); median of $rounds rounds"

if [ "${GOACCESS:-0}" = 1 ]; then
    t=$(seconds goaccess "$log" --log-format=COMBINED --no-global-config --no-progress -o "$dir/goaccess.json")
    hosts=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['hosts']['metadata']['data']['total']['value'])" "$dir/goaccess.json")
    printf '%-44s %8s s  %6.1fx ip-counter count (one run; hosts: %s)\n' "goaccess --log-format=COMBINED -o json" "$t" "$(echo "$t / $count" | bc -l)" "$hosts"
fi
