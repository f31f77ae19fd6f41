#!/usr/bin/env bash
# Fails fast, with one clear line, when no Docker engine can be reached (the client alone is not
# enough to build or run images).
set -euo pipefail

if ! command -v docker >/dev/null 2>&1; then
    echo "docker engine not reachable: the 'docker' command is not installed" >&2
    exit 1
fi
if ! err=$(docker info --format '{{.ServerVersion}}' 2>&1 >/dev/null); then
    echo "docker engine not reachable: $(printf '%s' "$err" | grep -v '^$' | tail -n 1)" >&2
    exit 1
fi
