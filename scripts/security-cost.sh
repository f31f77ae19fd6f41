#!/usr/bin/env bash
# Throughput cost of AUTH_TOKEN and TLS: the release binary plain, with a token, with TLS and
# with both, each under the same wrk load as `make load-test` (POST /logs, a new random IPv4
# address a request), in rotating order, and each variant's req/s as a ratio to the plain one
# of the same round.
#
#   scripts/security-cost.sh                  # 3 rounds of 10 s per variant
#   ROUNDS=5 DURATION=20s scripts/security-cost.sh
#
# All traffic goes to 127.0.0.1; the services are stopped on exit; a throwaway self-signed
# certificate is made with openssl. Raw wrk output is kept in target/security-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PORT=${BASE_PORT:-15100}
OUT=target/security-cost
TOKEN=security-cost-token

die() { echo "security-cost: $*" >&2; exit 1; }
# shellcheck source=scripts/wrk-lib.sh
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load-only
command -v openssl >/dev/null || die "openssl is needed for the test certificate (apt-get install openssl)"
cargo build --release --quiet --bin ip-counter
mkdir -p "$OUT"
certs=$(mktemp -d "${TMPDIR:-/tmp}/ip-counter-certs.XXXXXX")
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$certs/key.pem" -out "$certs/cert.pem" 2>/dev/null

variants=(plain auth tls auth+tls)
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$certs"
}
trap stop EXIT
trap 'exit 130' INT TERM

port_of() { local i; for i in "${!variants[@]}"; do [ "${variants[$i]}" = "$1" ] && echo $((BASE_PORT + i)); done; }
url_of() { case "$1" in *tls) echo "https://$HOST:$(port_of "$1")/logs" ;; *) echo "http://$HOST:$(port_of "$1")/logs" ;; esac; }
for i in "${!variants[@]}"; do
    v=${variants[$i]}
    env=(LOG_PORT=$((BASE_PORT + i)) METRICS_PORT=$((BASE_PORT + 100 + i)) SERVER_HOST=$HOST LOG_LEVEL=warn)
    case "$v" in auth*) env+=(AUTH_TOKEN=$TOKEN) ;; esac
    case "$v" in *tls) env+=(TLS_CERT=$certs/cert.pem TLS_KEY=$certs/key.pem) ;; esac
    env "${env[@]}" target/release/ip-counter >"$OUT/$v.log" 2>&1 </dev/null &
    pids+=($!)
done
for v in "${variants[@]}"; do
    ready=
    for _ in $(seq 100); do
        curl -fsSk -o /dev/null --max-time 1 "$(url_of "$v" | sed 's|/logs$|/ready|')" 2>/dev/null && ready=1 && break
        sleep 0.1
    done
    [ -n "$ready" ] || { cat "$OUT/$v.log" >&2; die "$v not ready after 10 s"; }
done

declare -A ratios rates
echo "security-cost: $ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d${dur_s}s per variant, rotating order" >&2
for round in $(seq "$ROUNDS"); do
    order=("${variants[@]:$(((round - 1) % 4))}" "${variants[@]:0:$(((round - 1) % 4))}")
    declare -A rps=()
    for v in "${order[@]}"; do
        case "$v" in auth*) export WRK_BEARER_TOKEN=$TOKEN ;; *) export WRK_BEARER_TOKEN= ;; esac
        rps[$v]=$(wrk_rps "$v" "$(url_of "$v")" "$round")
    done
    line="round $round (${order[*]}):"
    for v in "${variants[@]}"; do
        r=$(awk -v a="${rps[$v]}" -v b="${rps[plain]}" 'BEGIN {printf "%.3f", a / b}')
        ratios[$v]+="$r "
        rates[$v]+="${rps[$v]} "
        line+=" $v $(printf '%.0f' "${rps[$v]}") req/s ($r)"
    done
    echo "security-cost: $line" >&2
done

echo
echo "### Cost of auth and TLS ($(date -u +%Y-%m-%d), $(nproc) CPUs, load average $(cut -d" " -f1 /proc/loadavg) at the end)"
echo
echo "\`wrk -t$THREADS -c$CONNECTIONS -d${dur_s}s -s scripts/random-ip.lua\`, $ROUNDS rounds in rotating order; ratio to plain in the same round."
echo
echo "| variant | median req/s | median ratio to plain | ratios by round |"
echo "|---|---:|---:|---|"
for v in "${variants[@]}"; do
    med_rps=$(tr ' ' '\n' <<<"${rates[$v]}" | grep . | median)
    med_ratio=$(tr ' ' '\n' <<<"${ratios[$v]}" | grep . | median)
    printf '| %s | %.0f | %.3f | %s |\n' "$v" "$med_rps" "$med_ratio" "${ratios[$v]% }"
done
