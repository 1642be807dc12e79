"""mnist_rf's whole run against scikit-learn's whole script (issue 17).

dagml: `dagml run pipelines/mnist_rf.toml` as the README says it (the default
embedded cluster of the file's 2 workers x 1 thread), timed from outside, with
the run's own per-step summary kept (`--timings`). scikit-learn: one Python
process doing what the pipeline does: read the four IDX files, fit
RandomForestClassifier(n_estimators=100, max_features="sqrt", n_jobs=2), score
the training and the test rows (accuracy, classification report, confusion
matrix), write the test predictions (Parquet, when pyarrow is there) and the
model (pickle). Runs alternate, each `--runs` times; the medians are printed
with the ratio against the goal (dagml at most a third of scikit-learn).

Usage: python3 bench/whole_run.py [--runs N] [--dagml PATH] [--baseline PATH] [--skip-sklearn]
Run from the repository root, with target/release/dagml built.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SKLEARN = r"""
import gzip, os, pickle, sys, time
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

d, out = sys.argv[1], sys.argv[2]

def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)

xtr = idx(os.path.join(d, "train-images-idx3-ubyte.gz")).reshape(60000, -1)
ytr = idx(os.path.join(d, "train-labels-idx1-ubyte.gz"))
xte = idx(os.path.join(d, "t10k-images-idx3-ubyte.gz")).reshape(10000, -1)
yte = idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
clf = RandomForestClassifier(n_estimators=100, max_features="sqrt", n_jobs=2, random_state=42)
clf.fit(xtr, ytr)
for x, y in ((xtr, ytr), (xte, yte)):
    p = clf.predict_proba(x)
    yhat = clf.classes_[p.argmax(axis=1)]
    acc = accuracy_score(y, yhat)
    classification_report(y, yhat, digits=4)
    confusion_matrix(y, yhat)
print(f"accuracy {acc:.4f}")
try:
    import pyarrow as pa, pyarrow.parquet as pq
    pq.write_table(pa.table({"label": yte, "prediction": yhat, "probability": p.max(axis=1)}),
                   os.path.join(out, "predictions.parquet"))
except ImportError:
    np.save(os.path.join(out, "predictions.npy"), yhat)
with open(os.path.join(out, "forest.pkl"), "wb") as f:
    pickle.dump(clf, f)
"""


def run_dagml(dagml, work):
    timings = os.path.join(work, "timings.json")
    t0 = time.perf_counter()
    subprocess.run(
        [dagml, "run", "pipelines/mnist_rf.toml", "--quiet", "--timings", timings],
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    with open(timings) as f:
        t = json.load(f)
    with open(os.path.join(work, "out", "mnist_rf", "metrics.json")) as f:
        m = json.load(f)
    acc = next(
        r["scores"]["accuracy"]
        for e in m["evaluations"]
        for r in e["results"]
        if r["data"] == "mnist.test"
    )
    return wall, t, acc


def run_sklearn(work):
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", SKLEARN, os.path.join(ROOT, "data", "mnist"), work],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - t0, out.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dagml", default=os.path.join(ROOT, "target", "release", "dagml"))
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--baseline", help="another dagml binary, run in turn with --dagml (an A/B in one sitting)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dagml-whole-")
    for sub in ("data", "pipelines"):
        os.symlink(os.path.join(ROOT, sub), os.path.join(work, sub))
    ours, theirs, base, steps = [], [], [], {}
    acc = None
    for i in range(a.runs):
        wall, t, acc = run_dagml(a.dagml, work)
        ours.append(wall)
        for s in t["steps"]:
            steps.setdefault(s["step"], []).append((s["wall_s"], s.get("busy_s", 0.0)))
        print(f"run {i + 1}: dagml {wall:.2f} s (accuracy {acc:.4f})", flush=True)
        if a.baseline:
            bwall, _, bacc = run_dagml(a.baseline, work)
            base.append(bwall)
            print(f"run {i + 1}: baseline {bwall:.2f} s (accuracy {bacc:.4f})", flush=True)
        if not a.skip_sklearn:
            sk, line = run_sklearn(work)
            theirs.append(sk)
            print(f"run {i + 1}: scikit-learn {sk:.2f} s ({line})", flush=True)
    print("\nper step (median wall / busy over the runs):")
    for name, v in sorted(steps.items(), key=lambda kv: -statistics.median(x[0] for x in kv[1])):
        w = statistics.median(x[0] for x in v)
        b = statistics.median(x[1] for x in v)
        print(f"  {name:<28} {w:6.2f} s  busy {b:6.2f} s")
    mo = statistics.median(ours)
    print(f"\ndagml whole run: median {mo:.2f} s ({min(ours):.2f}-{max(ours):.2f}), accuracy {acc:.4f}")
    if base:
        mb = statistics.median(base)
        print(f"baseline whole run: median {mb:.2f} s ({min(base):.2f}-{max(base):.2f}); dagml/baseline {mo / mb:.3f}")
    if theirs:
        ms = statistics.median(theirs)
        print(f"scikit-learn whole script: median {ms:.2f} s ({min(theirs):.2f}-{max(theirs):.2f})")
        ratio = mo / ms
        print(f"ratio {ratio:.3f} (goal <= 0.333: {'met' if ratio <= 1 / 3 else 'MISSED'})")
        if base:
            print(f"baseline ratio {statistics.median(base) / ms:.3f}")


if __name__ == "__main__":
    main()
