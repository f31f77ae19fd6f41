#!/usr/bin/env bash
# Makes sure a cargo subcommand is available before a Makefile target uses it.
#
#   scripts/cargo-tool.sh SUBCOMMAND CRATE [--install]
#
# Without --install it only checks and, when the tool is missing, says exactly what to run.
# With --install it runs `cargo install CRATE --locked` (from crates.io). For llvm-cov it also
# makes sure the rustup component llvm-tools-preview is present.
set -euo pipefail

sub=${1:?usage: cargo-tool.sh SUBCOMMAND CRATE [--install]}
crate=${2:?usage: cargo-tool.sh SUBCOMMAND CRATE [--install]}
install=0
[ "${3-}" = "--install" ] && install=1

fail() { echo "cargo-tool: $*" >&2; exit 1; }

if ! cargo "$sub" --version >/dev/null 2>&1 && ! cargo "$sub" --help >/dev/null 2>&1; then
    if [ "$install" = 0 ]; then
        fail "'cargo $sub' is missing; install it with: cargo install $crate --locked"
    fi
    echo "cargo-tool: installing $crate (cargo install $crate --locked; takes a few minutes)" >&2
    cargo install "$crate" --locked ||
        fail "'cargo install $crate --locked' failed; is crates.io reachable?"
fi

if [ "$sub" = llvm-cov ]; then
    if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
        command -v rustup >/dev/null 2>&1 ||
            fail "rustup not found: cargo-llvm-cov needs the llvm-tools-preview component (or LLVM_COV and LLVM_PROFDATA pointing at llvm-cov/llvm-profdata matching rustc $(rustc --version | cut -d' ' -f2))"
        echo "cargo-tool: adding rustup component llvm-tools-preview" >&2
        rustup component add llvm-tools-preview >&2 ||
            fail "could not fetch the rustup component llvm-tools-preview (from static.rust-lang.org); without it cargo llvm-cov cannot run. Alternatives: set LLVM_COV and LLVM_PROFDATA to an llvm-cov/llvm-profdata of the same LLVM major version as 'rustc -vV' reports"
    fi
fi
