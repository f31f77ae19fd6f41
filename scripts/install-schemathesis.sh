#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) into target/tools/venv for tests/api/schemathesis.rs.
# Quiet and quick when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=target/tools/venv
if "$venv/bin/st" --version 2>/dev/null | grep -qF "$version"; then
    exit 0
fi
fail() { echo "install-schemathesis: $*" >&2; exit 1; }
command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3 python3-venv)"
echo "install-schemathesis: installing schemathesis $version into $venv (pip, from PyPI)" >&2
python3 -m venv "$venv" || fail "python3 -m venv failed (apt-get install python3-venv)"
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" ||
    fail "pip could not install schemathesis==$version (is PyPI reachable?)"
