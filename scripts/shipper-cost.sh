#!/usr/bin/env bash
# Which shipper (issue #15): nginx's mirror (deploy/nginx/mirror.conf) against tailing nginx's
# access log with `ip-counter send --follow`, on the release binary and a real nginx:
#   1. cost per request: wrk GET against nginx without and with the mirror, rotating order,
#      ROUNDS rounds (default 3), the mirrored nginx's req/s as a ratio to the plain one;
#   2. delay: from a request of a new address to the count going up, median of 5, each way;
#   3. loss across an ip-counter restart: 400 requests from 400 distinct 127.x source
#      addresses while each ip-counter is stopped (SIGTERM) and started again in the middle.
# All traffic goes to 127.0.0.1 and 127.x source addresses; everything lives in a temp dir.
#
#   scripts/shipper-cost.sh            # ROUNDS=3 DURATION=5
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
BASE_PORT=${BASE_PORT:-15700}
die() { echo "shipper-cost: $*" >&2; exit 1; }

scripts/install-test-deps.sh --load
cargo build --release --quiet --bin ip-counter
bin=$PWD/target/release/ip-counter
nginx_bin=/usr/sbin/nginx
[ -x "$nginx_bin" ] || nginx_bin=$(command -v nginx) || die "nginx is missing"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}" $(cat "$work"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# start_counter NAME PORT: an ip-counter on PORT with its data directory in $work/NAME.
start_counter() {
    local name=$1 port=$2
    LOG_LEVEL=warn LOG_PORT=$port METRICS_PORT=0 SERVER_HOST=127.0.0.1 DATA_DIR="$work/$name" \
        "$bin" >>"$work/$name.out" 2>&1 &
    echo $! >"$work/$name.pid"
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$port/ready" >/dev/null && return 0
        sleep 0.05
    done
    die "ip-counter $name did not get ready on :$port"
}
count() { curl -sf "http://127.0.0.1:$1/stats" | sed 's/.*"unique_ip_addresses":\([0-9]*\).*/\1/'; }

# start_nginx NAME PORT [MIRROR_TO_PORT]: nginx on PORT logging to $work/NAME/access.log, with
# the shipped mirror config pointed at MIRROR_TO_PORT when given.
start_nginx() {
    local name=$1 port=$2 to=${3:-} d=$work/$1 http='' server=''
    mkdir -p "$d"
    if [ -n "$to" ]; then
        http=$(sed "s/127.0.0.1:5000/127.0.0.1:$to/" deploy/nginx/ip-counter-upstream.conf)
        server="include $PWD/deploy/nginx/mirror.conf;"
    fi
    cat >"$d/nginx.conf" <<EOF
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 1024; }
http {
    access_log $d/access.log combined;
    client_body_temp_path $d/cb; proxy_temp_path $d/px; fastcgi_temp_path $d/fc;
    uwsgi_temp_path $d/uw; scgi_temp_path $d/sc;
    $http
    server { listen 127.0.0.1:$port; location / { empty_gif; } $server }
}
EOF
    "$nginx_bin" -p "$d" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;' &
    pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" -o /dev/null && return 0; sleep 0.05; done
    die "nginx $name did not start on :$port"
}

p_mirror_counter=$BASE_PORT
p_follow_counter=$((BASE_PORT + 1))
p_plain=$((BASE_PORT + 2))
p_mirrored=$((BASE_PORT + 3))
start_counter mirror-counter "$p_mirror_counter"
start_counter follow-counter "$p_follow_counter"
start_nginx plain "$p_plain"
start_nginx mirrored "$p_mirrored" "$p_mirror_counter"

echo "### 1. Cost per request: wrk -t1 -c32 -d${DURATION}s GET /, $ROUNDS rounds, rotating order"
echo
rps() { wrk -t1 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$1/" | awk '/^Requests\/sec:/ {r=$2} $1 == "99%" {p=$2} END {print r, p}'; }
ratios=()
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then read -r a ap < <(rps "$p_plain"); read -r b bp < <(rps "$p_mirrored")
    else read -r b bp < <(rps "$p_mirrored"); read -r a ap < <(rps "$p_plain"); fi
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')
    ratios+=("$ratio")
    echo "round $round: plain $a req/s (p99 $ap), mirrored $b req/s (p99 $bp), ratio $ratio"
done
echo "median ratio mirrored/plain: $(printf '%s\n' "${ratios[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')"

# send --follow on the plain nginx's access log (started after the wrk runs: their lines all
# come from 127.0.0.1 and are sent at once).
"$bin" send --follow --state "$work/follow.state" --to "http://127.0.0.1:$p_follow_counter" \
    "$work/plain/access.log" >"$work/follow.out" 2>&1 &
follow_pid=$!
pids+=($follow_pid)
sleep 2

echo
echo "### 2. Delay from a request of a new address to the count going up (median of 5)"
echo
# delay NGINX_PORT COUNTER_PORT SOURCE: milliseconds until the count of COUNTER_PORT grows
# after a GET to NGINX_PORT from SOURCE.
delay() {
    local before start now
    before=$(count "$2")
    start=$(date +%s%N)
    curl -s -o /dev/null --interface "$3" "http://127.0.0.1:$1/"
    while [ "$(count "$2")" = "$before" ]; do
        now=$(date +%s%N)
        [ $(( (now - start) / 1000000 )) -lt 10000 ] || { echo 10000+; return; }
        sleep 0.005
    done
    now=$(date +%s%N)
    echo $(( (now - start) / 1000000 ))
}
m=() f=()
for i in 1 2 3 4 5; do
    m+=("$(delay "$p_mirrored" "$p_mirror_counter" "127.20.0.$i")")
    f+=("$(delay "$p_plain" "$p_follow_counter" "127.21.0.$i")")
done
echo "mirror: ${m[*]} ms; median $(printf '%s\n' "${m[@]}" | sort -g | sed -n 3p) ms"
echo "send --follow: ${f[*]} ms; median $(printf '%s\n' "${f[@]}" | sort -g | sed -n 3p) ms"

echo
echo "### 3. Loss across an ip-counter restart: 400 distinct sources, both ip-counters restarted after 200"
echo
m0=$(count "$p_mirror_counter")
f0=$(count "$p_follow_counter")
for i in $(seq 0 399); do
    if [ "$i" = 200 ]; then
        # Down for about half a second while the requests go on.
        (
            kill -TERM "$(cat "$work/mirror-counter.pid")" "$(cat "$work/follow-counter.pid")"
            sleep 0.5
            start_counter mirror-counter "$p_mirror_counter"
            start_counter follow-counter "$p_follow_counter"
        ) &
    fi
    src="127.30.$((i / 200)).$((i % 200 + 1))"
    curl -s -o /dev/null --interface "$src" "http://127.0.0.1:$p_mirrored/" &
    curl -s -o /dev/null --interface "$src" "http://127.0.0.1:$p_plain/"
    wait "$!" 2>/dev/null || true
done
wait_ready() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return; sleep 0.05; done; }
sleep 1
wait_ready "$p_mirror_counter"
wait_ready "$p_follow_counter"
sleep 4
echo "mirror: $(( $(count "$p_mirror_counter") - m0 )) of 400 counted"
echo "send --follow: $(( $(count "$p_follow_counter") - f0 )) of 400 counted"
