#!/usr/bin/env bash
# A change against the build before it, in one run on this machine: the release build of the
# work tree ("new") and of commit REV ("old", built in its own worktree and target directory):
#   1. single-entry POST /logs under `make load-test`'s wrk load, old and new side by side in
#      rotating order, new's ratio to old in each round;
#   2. bulk batches (examples/batch_ingest.rs --against OLD,NEW): NDJSON and text, plain and gzip;
#   3. the old build's data directory started by the new build: the same count, verify exit 0.
#
#   scripts/ab.sh REV                 # e.g. scripts/ab.sh HEAD~5; ROUNDS=5 (default)
#   ROUNDS=7 DURATION=10s scripts/ab.sh REV
#
# All traffic goes to 127.0.0.1. Raw wrk output is kept in target/ab/.
set -euo pipefail
cd "$(dirname "$0")/.."

rev=${1:?usage: scripts/ab.sh REV}
ROUNDS=${ROUNDS:-5}
BASE_PORT=${BASE_PORT:-15400}
OUT=target/ab
die() { echo "ab: $*" >&2; exit 1; }
# shellcheck source=scripts/wrk-lib.sh
. scripts/wrk-lib.sh

scripts/install-test-deps.sh --load-only
mkdir -p "$OUT"
sha=$(git rev-parse --short "$rev")
old=$OUT/ip-counter-$sha
if [ ! -x "$old" ]; then
    src=$OUT/src-$sha
    [ -d "$src" ] || git worktree add --detach "$src" "$sha" >/dev/null
    (cd "$src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --quiet --bin ip-counter)
    cp "$OUT/target/release/ip-counter" "$old"
    git worktree remove --force "$src"
fi
cargo build --release --quiet --bin ip-counter --example batch_ingest
new=target/release/ip-counter

variant_bin() { case "$1" in old) echo "$old" ;; new) echo "$new" ;; esac; }
compare_variants "$sha (old) against the work tree (new), single entries" "$BASE_PORT" old new

echo
echo "### Bulk batches, $ROUNDS rounds, ratio to $sha (old) in the same round"
echo
target/release/examples/batch_ingest --rounds "$ROUNDS" --against "$old,$new"

echo
echo "### The old build's data directory, started by the new build"
data=$(mktemp -d "${TMPDIR:-/tmp}/ip-counter-ab.XXXXXX")
trap 'rm -rf "$data"' EXIT
port=$((BASE_PORT + 50))
start() {
    LOG_PORT=$port METRICS_PORT=$((port + 1)) SERVER_HOST=$HOST LOG_LEVEL=warn DATA_DIR="$data" \
        "$1" >"$OUT/compat-$2.log" 2>&1 </dev/null &
    pid=$!
    for _ in $(seq 100); do
        curl -fs -o /dev/null "http://$HOST:$port/ready" && return
        sleep 0.1
    done
    die "$1 not ready (see $OUT/compat-$2.log)"
}
count() { curl -fs "http://$HOST:$port/stats" | sed 's/.*"unique_ip_addresses":\([0-9]*\).*/\1/'; }
start "$old" old
wrk -t1 -c8 -d2s -s "$LUA" "http://$HOST:$port/logs" >/dev/null
before=$(count)
kill -TERM "$pid"; wait "$pid"
"$new" verify "$data" >"$OUT/compat-verify.txt" || die "the new build's verify refused the old build's directory"
start "$new" new
after=$(count)
kill -TERM "$pid"; wait "$pid"
[ "$before" = "$after" ] || die "old build counted $before, the new build read back $after"
echo "old build: $before addresses written; new build: verify exit 0, $after read back"
