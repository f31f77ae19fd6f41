#!/usr/bin/env bash
# Installs everything the Makefile targets use: rustup components, cargo tools from crates.io,
# and the apt tools of the tests and the load test. Skips whatever is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy
    rustup component add llvm-tools-preview ||
        echo "install-dev-deps: could not add llvm-tools-preview; 'make coverage' will not work" >&2
else
    echo "install-dev-deps: rustup not found; make sure rustfmt and clippy come with your toolchain" >&2
fi
scripts/cargo-tool.sh watch cargo-watch --install
scripts/cargo-tool.sh llvm-cov cargo-llvm-cov --install
scripts/cargo-tool.sh audit cargo-audit --install
scripts/install-test-deps.sh --load
echo "install-dev-deps: done"
