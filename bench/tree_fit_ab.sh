#!/bin/bash
# The forest's fit, this tree against another commit's, side by side: both
# `bench/tree_fit` binaries run at the same time, each pinned to its own core
# (swapped every round), so the machine's slow and fast spells hit both alike.
# Prints each round's CPU seconds, both trees hashes (equal: the same trees)
# and the ratio of the means.
#
#   bench/tree_fit_ab.sh REV [ROUNDS] [TREES] [FIRST]
#   bench/tree_fit_ab.sh HEAD~1 6 12 30
#
# In: a commit (REV) whose src/ml/tree.rs, src/data/rng.rs and bench/tree_fit
# are the baseline; this work tree is the candidate. Run from the repository
# root on a machine with 2 cores or more (taskset, from util-linux). Out: lines
# on stdout. Must not: leave the baseline's copy behind (a temporary folder).
set -euo pipefail
rev=${1:?usage: bench/tree_fit_ab.sh REV [ROUNDS] [TREES] [FIRST]}
rounds=${2:-6}
trees=${3:-12}
first=${4:-30}
root=$(pwd)
[ -f "$root/bench/tree_fit/Cargo.toml" ] || { echo "run from the repository root" >&2; exit 2; }
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
mkdir -p "$base/src/ml" "$base/src/data" "$base/bench/tree_fit/src/ml"
git show "$rev:src/ml/tree.rs" > "$base/src/ml/tree.rs"
git show "$rev:src/data/rng.rs" > "$base/src/data/rng.rs"
for f in Cargo.toml Cargo.lock src/main.rs src/ml/bins.rs; do
    git show "$rev:bench/tree_fit/$f" > "$base/bench/tree_fit/$f"
done
ln -s "$root/data" "$base/data"
echo "building the candidate and $rev's fit ..." >&2
cargo build -q --release --manifest-path bench/tree_fit/Cargo.toml
CARGO_TARGET_DIR="$root/bench/tree_fit/target/ab-base" \
    cargo build -q --release --manifest-path "$base/bench/tree_fit/Cargo.toml"
new="$root/bench/tree_fit/target/release/tree_fit"
old="$root/bench/tree_fit/target/ab-base/release/tree_fit"
echo "round  $rev (s)  candidate (s)  hashes"
for i in $(seq "$rounds"); do
    a=$((i % 2)); b=$((1 - a))
    (cd "$base" && taskset -c "$a" "$old" "$trees" "$first" > "$base/old.txt") &
    taskset -c "$b" "$new" "$trees" "$first" > "$base/new.txt" &
    wait
    # "12 trees from 30: fit 1.878 s of CPU, 119746 nodes, trees hash 322e..."
    to=$(awk '{ print $6 }' "$base/old.txt"); ho=$(awk '{ print $NF }' "$base/old.txt")
    tn=$(awk '{ print $6 }' "$base/new.txt"); hn=$(awk '{ print $NF }' "$base/new.txt")
    same=$([ "$ho" = "$hn" ] && echo "same trees" || echo "DIFFERENT trees")
    echo "$i  $to  $tn  $same"
done | tee "$base/rounds.txt"
awk '{ so += $2; sn += $3; n++ } END { printf "mean: %s %.3f s, candidate %.3f s, ratio %.3f\n", "'"$rev"'", so / n, sn / n, sn / so }' "$base/rounds.txt"
