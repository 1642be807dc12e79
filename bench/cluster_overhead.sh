#!/usr/bin/env bash
# The distributed path's cost: mnist_rf in-process against the embedded cluster
# (2 workers x 1 thread). Prints both wall times, the ratio (goal <= 1.10) and
# whether the model files are identical. Usage: bench/cluster_overhead.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 bench/cluster_overhead.py "$@"
