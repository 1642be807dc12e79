#!/usr/bin/env bash
# Checks the deployment files offline (deploy/check.py says what): makes a
# virtual environment at target/deploy-venv with deploy/requirements.txt
# (pinned; made again when that file changes), then runs the checks against
# the dagml binary given (default target/debug/dagml, built if missing).
# Needs python3 with venv and pip and a package index; no Docker, no cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
dagml="${1:-target/debug/dagml}"
if [ ! -x "$dagml" ]; then
  cargo build --quiet --bin dagml
fi
venv=target/deploy-venv
if ! cmp -s deploy/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  rm -rf "$venv" "$venv.tmp"
  timeout 120 python3 -m venv "$venv.tmp"
  timeout 600 "$venv.tmp/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r deploy/requirements.txt
  cp deploy/requirements.txt "$venv.tmp/requirements.txt"
  mv "$venv.tmp" "$venv"
fi
timeout 300 "$venv/bin/python" deploy/check.py "$dagml"
