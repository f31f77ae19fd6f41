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

variant_env() {
    case "$1" in auth*) echo "AUTH_TOKEN=$TOKEN" ;; esac
    case "$1" in *tls) printf '%s\n' "TLS_CERT=$certs/cert.pem" "TLS_KEY=$certs/key.pem" ;; esac
}
variant_scheme() { case "$1" in *tls) echo https ;; *) echo http ;; esac; }
variant_token() { case "$1" in auth*) echo "$TOKEN" ;; esac; }
variant_cleanup() { rm -rf "$certs"; }
compare_variants "Cost of auth and TLS" "$BASE_PORT" plain auth tls auth+tls
