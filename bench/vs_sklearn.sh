#!/usr/bin/env bash
# dagml against scikit-learn, same machine, same sitting: figures and ratios for
# the goals of issue 4 (see bench/vs_sklearn.py). Installs scikit-learn, pandas and
# pyarrow into bench/.venv when they are missing; builds dagml in release mode.
# Usage: bench/vs_sklearn.sh [--only rf,logreg,house,determinism]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv
if ! "$VENV/bin/python" -c "import sklearn, pandas, pyarrow" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet scikit-learn pandas pyarrow
fi
cargo build --release --quiet
exec "$VENV/bin/python" bench/vs_sklearn.py "$@"
