#!/usr/bin/env bash
# Installs, via apt, the system tools the tests and the load test need, and only those missing.
#
#   scripts/install-test-deps.sh            # test deps: prometheus + promtool, nginx, curl,
#                                           # syslog-ng with its http module, haproxy, redis,
#                                           # and schemathesis, kubernetes-validate and
#                                           # hadolint in target/tools/venv (pip)
#   scripts/install-test-deps.sh --load     # also wrk, for scripts/load-test.sh
#   scripts/install-test-deps.sh --load-only
#
# Idempotent and quiet when everything is present. `apt-get update` runs at most once per call.
# Note: Debian's `prometheus` package starts a prometheus service on :9090 from its postinst when
# a service manager is running; nothing in this repository uses or needs :9090.
set -euo pipefail

want_test=1
want_load=0
for arg in "$@"; do
    case "$arg" in
        --load) want_load=1 ;;
        --load-only) want_load=1; want_test=0 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "install-test-deps: unknown argument '$arg' (use --load or --load-only)" >&2; exit 2 ;;
    esac
done

if [ "$want_test" = 1 ]; then
    "$(dirname "$0")/install-schemathesis.sh"   # tests/api/schemathesis.rs
    "$(dirname "$0")/install-deploy-lint.sh"    # tests/api/deploy.rs
fi

# command -> Debian package that provides it
missing_pkgs=()
need() {
    local cmd=$1 pkg=$2
    if ! command -v "$cmd" >/dev/null 2>&1; then
        case " ${missing_pkgs[*]-} " in *" $pkg "*) ;; *) missing_pkgs+=("$pkg") ;; esac
    fi
}
if [ "$want_test" = 1 ]; then
    need prometheus prometheus
    need promtool prometheus
    [ -x /usr/sbin/nginx ] || need nginx nginx    # tests/api/nginx.rs: a real access log
    need curl curl      # ... requested from several 127.x source addresses
    # tests/api/syslog_ng.rs: deploy/syslog-ng/ip-counter.conf in a real syslog-ng
    [ -x /usr/sbin/syslog-ng ] || need syslog-ng syslog-ng-core
    compgen -G '/usr/lib/syslog-ng/*/libhttp.so' >/dev/null || missing_pkgs+=(syslog-ng-mod-http)
    # tests/api/haproxy.rs: PROXY_PROTOCOL behind a real haproxy (send-proxy, send-proxy-v2)
    [ -x /usr/sbin/haproxy ] || need haproxy haproxy
    need redis-server redis-server   # tests/api/redis.rs: STORE=redis
fi
if [ "$want_load" = 1 ]; then
    need wrk wrk
    need curl curl
fi

[ "${#missing_pkgs[@]}" -eq 0 ] && exit 0

fail() { echo "install-test-deps: $*" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 ||
    fail "missing ${missing_pkgs[*]} and apt-get is not available; install them by hand"
sudo=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
        fail "missing ${missing_pkgs[*]}; not root and no sudo: run 'apt-get install -y ${missing_pkgs[*]}' as root"
    sudo=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing ${missing_pkgs[*]} with apt-get" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "${sudo[@]}" apt-get update -qq >"$log" 2>&1; then
    cat "$log" >&2
    fail "'apt-get update' failed (is a Debian mirror reachable?)"
fi
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    fail "'apt-get install -y ${missing_pkgs[*]}' failed"
fi

still=()
for p in "${missing_pkgs[@]}"; do
    case "$p" in
        prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null || still+=("$p") ;;
        nginx) command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || still+=("$p") ;;
        syslog-ng-core) [ -x /usr/sbin/syslog-ng ] || still+=("$p") ;;
        syslog-ng-mod-http) compgen -G '/usr/lib/syslog-ng/*/libhttp.so' >/dev/null || still+=("$p") ;;
        *) command -v "$p" >/dev/null || still+=("$p") ;;
    esac
done
[ "${#still[@]}" -eq 0 ] || fail "installed ${missing_pkgs[*]} but still missing: ${still[*]}"
