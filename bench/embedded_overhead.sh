#!/usr/bin/env bash
# What the embedded cluster costs (issue 11): `dagml run FILE --in-process`
# against `dagml run FILE` (the default embedded cluster), alternating, for a
# 150-row CSV pipeline (bench/tiny_csv.toml), mnist_rf and gauss_linreg. Prints
# the medians side by side, the difference and the ratio against the goals
# (tiny: +0.1 s; mnist_rf and gauss_linreg: 1.15x) and whether the outputs are
# the same bytes. Exits 1 when a goal is missed or the bytes differ.
# Usage: bench/embedded_overhead.sh [--runs N] [--only tiny,mnist_rf,gauss_linreg] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 bench/embedded_overhead.py "$@"
