# Shared by scripts/load-test.sh and scripts/security-cost.sh (sourced, not run): the wrk
# settings both take from the environment, one wrk run with them, and a median. The caller sets
# OUT and defines die() before sourcing.

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
HOST=127.0.0.1
LUA=scripts/random-ip.lua

case "$ROUNDS" in '' | *[!0-9]* | 0) die "ROUNDS must be a positive integer, got '$ROUNDS'" ;; esac
case "$DURATION" in
    *[0-9]s) dur_s=${DURATION%s} ;;
    *[0-9]m) dur_s=$(( ${DURATION%m} * 60 )) ;;
    *[0-9]) dur_s=$DURATION ;;
    *) die "DURATION must look like 10, 10s or 2m, got '$DURATION'" ;;
esac
case "$dur_s" in '' | *[!0-9]*) die "DURATION must look like 10, 10s or 2m, got '$DURATION'" ;; esac

# wrk_rps NAME URL ROUND: one wrk run of POST /logs at URL; prints its Requests/sec and warns
# about errors. The raw output stays in $OUT/wrk-NAME-ROUND.txt.
wrk_rps() {
    local name=$1 url=$2 round=$3
    local log="$OUT/wrk-$name-$round.txt" rps
    timeout --kill-after=5 $((dur_s + 30)) \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${dur_s}s" --timeout 5s --latency -s "$LUA" \
        "$url" >"$log" 2>&1 || { cat "$log" >&2; die "wrk against $name failed (output above)"; }
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$log")
    [ -n "$rps" ] || { cat "$log" >&2; die "no Requests/sec in wrk output for $name"; }
    if grep -qE '^ *(Non-2xx|Socket errors)' "$log"; then
        echo "warning, $name round $round: $(grep -E '^ *(Non-2xx|Socket errors)' "$log" | tr -s ' ' | tr '\n' ';')" >&2
    fi
    printf '%s' "$rps"
}

# p99 NAME ROUND: the 99th percentile latency of that run.
p99() { awk '$1 == "99%" {print $2}' "$OUT/wrk-$1-$2.txt"; }

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
