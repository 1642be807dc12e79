"""What the distributed path costs: mnist_rf in-process against the embedded
cluster (scheduler and workers in one process, over loopback gRPC and Flight).

Goal (issue 6): the embedded cluster with 2 workers x 1 thread takes at most 10%
more wall time than the in-process run on 2 threads. Each variant runs RUNS times,
alternating, and the best (minimum) wall time of each is compared: the minimum is
the least disturbed by whatever else the machine is doing.

Run it through bench/cluster_overhead.sh, which builds dagml in release mode.
Usage: cluster_overhead.py [PIPELINE] [--runs N]
"""

import argparse
import hashlib
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAGML = os.environ.get("DAGML_BIN") or os.path.join(ROOT, "target", "release", "dagml")


def run(pipeline, extra):
    t0 = time.perf_counter()
    subprocess.run(
        [DAGML, "run", pipeline, "--quiet", *extra],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def model_hash(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipeline", nargs="?", default="pipelines/mnist_rf.toml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default="out/mnist_rf/forest.model")
    a = ap.parse_args()
    variants = {
        "in-process, 2 threads": ["--in-process", "--threads", "2"],
        "embedded cluster, 2 workers x 1 thread": ["--workers", "2", "--threads-per-worker", "1"],
    }
    times = {k: [] for k in variants}
    hashes = {}
    for i in range(a.runs):
        for name, extra in variants.items():
            times[name].append(run(a.pipeline, extra))
            hashes[name] = model_hash(a.model)
            print(f"run {i + 1}: {name:<42} {times[name][-1]:7.2f} s", flush=True)
    base, dist = (min(times[k]) for k in variants)
    print()
    print(f"{a.pipeline}, best of {a.runs} (whole command, wall)")
    for k in variants:
        print(f"  {k:<42} {min(times[k]):7.2f} s")
    ratio = dist / base
    print(f"  ratio {ratio:.3f}   goal: <= 1.10   {'met' if ratio <= 1.10 else 'MISSED'}")
    same = len(set(hashes.values())) == 1
    print(f"  same model file: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
