#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a set time on stable Rust
# (`--sanitizer none`: coverage-guided, without AddressSanitizer, which needs nightly; the
# targets are safe Rust, so what they look for is panics and broken invariants).
#
#   scripts/fuzz.sh                      # every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh parse_entry lines_body
#
# Each target starts from its seed corpus (fuzz/corpus/TARGET, in the repository); what
# libFuzzer adds goes to target/fuzz-corpus/TARGET, outside the repository. A crash stops the run
# with the failing input in fuzz/artifacts/TARGET/. Prints the executions and speed per target.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
case "$seconds" in '' | *[!0-9]* | 0) echo "fuzz: FUZZ_SECONDS must be a positive integer" >&2; exit 2 ;; esac
scripts/cargo-tool.sh fuzz cargo-fuzz --install
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)

rows=()
for target in "${targets[@]}"; do
    work=target/fuzz-corpus/$target
    mkdir -p "$work"
    log=target/fuzz-$target.log
    echo "fuzz: $target for ${seconds}s" >&2
    (cd fuzz && cargo fuzz run --sanitizer none "$target" "../$work" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1) >"$log" 2>&1 ||
        { tail -n 40 "$log" >&2; echo "fuzz: $target failed (log: $log)" >&2; exit 1; }
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
    speed=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n 1)
    corpus=$(find "$work" -type f | wc -l)
    rows+=("| $target | ${seconds} s | $execs | $speed | $corpus |")
done

echo
echo "### Fuzzing ($(date -u +%Y-%m-%d), \`FUZZ_SECONDS=$seconds make fuzz\`, one core each, --sanitizer none)"
echo
echo "| target | time | executions | per second | corpus entries |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "No failures."
