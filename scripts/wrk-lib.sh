# Shared by scripts/load-test.sh, security-cost.sh and durability-cost.sh (sourced, not run): the
# wrk settings they take from the environment, one wrk run with them, a median, and a comparison
# of service variants. The caller sets OUT and defines die() before sourcing.

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

# Hooks for compare_variants; a caller may redefine them after sourcing this file.
# variant_env NAME: the variant's settings, one VAR=value a line.
variant_env() { :; }
# variant_scheme NAME: http or https.
variant_scheme() { echo http; }
# variant_token NAME: the bearer token wrk sends, or nothing.
variant_token() { :; }
# variant_cleanup: runs on exit after the services are stopped.
variant_cleanup() { :; }
# variant_bin NAME: the binary the variant runs.
variant_bin() { echo target/release/ip-counter; }

# compare_variants TITLE BASE_PORT VARIANT...: starts variant_bin (target/release/ip-counter) once per variant
# (port BASE_PORT+i, its settings from variant_env, LOG_LEVEL=warn, a fresh DATA_DIR of its own),
# waits for each to be ready, then runs wrk against each in rotating order for ROUNDS rounds
# and prints a Markdown table of req/s and of each variant's ratio to the first variant of the
# same round. The services are stopped when the calling script exits.
compare_variants() {
    local title=$1 base_port=$2
    shift 2
    variants=("$@")
    variant_pids=()
    variant_data=$(mktemp -d "${TMPDIR:-/tmp}/ip-counter-variants.XXXXXX")
    trap 'for pid in "${variant_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$variant_data"; variant_cleanup' EXIT
    trap 'exit 130' INT TERM
    local i v env url ready round line r
    for i in "${!variants[@]}"; do
        v=${variants[$i]}
        mapfile -t env < <(variant_env "$v")
        env LOG_PORT=$((base_port + i)) METRICS_PORT=$((base_port + 100 + i)) SERVER_HOST=$HOST \
            LOG_LEVEL=warn DATA_DIR="$variant_data/$i" "${env[@]}" \
            "$(variant_bin "$v")" >"$OUT/$v.log" 2>&1 </dev/null &
        variant_pids+=($!)
    done
    variant_url() {
        local j
        for j in "${!variants[@]}"; do
            [ "${variants[$j]}" = "$1" ] && echo "$(variant_scheme "$1")://$HOST:$((base_port + j))$2"
        done
    }
    for v in "${variants[@]}"; do
        ready=
        for _ in $(seq 100); do
            curl -fsSk -o /dev/null --max-time 1 "$(variant_url "$v" /ready)" 2>/dev/null && ready=1 && break
            sleep 0.1
        done
        [ -n "$ready" ] || { cat "$OUT/$v.log" >&2; die "$v not ready after 10 s"; }
    done

    declare -A ratios rates
    local n=${#variants[@]} first=${variants[0]}
    echo "$title: $ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d${dur_s}s per variant, rotating order" >&2
    for round in $(seq "$ROUNDS"); do
        local order=("${variants[@]:$(((round - 1) % n))}" "${variants[@]:0:$(((round - 1) % n))}")
        declare -A rps=()
        for v in "${order[@]}"; do
            WRK_BEARER_TOKEN=$(variant_token "$v")
            export WRK_BEARER_TOKEN
            rps[$v]=$(wrk_rps "$v" "$(variant_url "$v" /logs)" "$round")
        done
        line="round $round (${order[*]}):"
        for v in "${variants[@]}"; do
            r=$(awk -v a="${rps[$v]}" -v b="${rps[$first]}" 'BEGIN {printf "%.3f", a / b}')
            ratios[$v]+="$r "
            rates[$v]+="${rps[$v]} "
            line+=" $v $(printf '%.0f' "${rps[$v]}") req/s ($r)"
        done
        echo "$title: $line" >&2
    done

    echo
    echo "### $title ($(date -u +%Y-%m-%d), $(nproc) CPUs, load average $(cut -d" " -f1 /proc/loadavg) at the end)"
    echo
    echo "\`wrk -t$THREADS -c$CONNECTIONS -d${dur_s}s -s scripts/random-ip.lua\`, $ROUNDS rounds in rotating order; ratio to $first in the same round."
    echo
    echo "| variant | median req/s | median ratio to $first | ratios by round | median p99 |"
    echo "|---|---:|---:|---|---:|"
    for v in "${variants[@]}"; do
        local med_rps med_ratio med_p99
        med_rps=$(tr ' ' '\n' <<<"${rates[$v]}" | grep . | median)
        med_ratio=$(tr ' ' '\n' <<<"${ratios[$v]}" | grep . | median)
        med_p99=$(for round in $(seq "$ROUNDS"); do p99 "$v" "$round"; done | sort -V | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
        printf '| %s | %.0f | %.3f | %s | %s |\n' "$v" "$med_rps" "$med_ratio" "${ratios[$v]% }" "$med_p99"
    done
}
