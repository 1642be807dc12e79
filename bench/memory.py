"""Peak memory of gauss_linreg at a chosen size (issue 17 item 5, bounded memory).

Writes a copy of pipelines/gauss_linreg.toml into a temporary directory with
`rows` and `partitions` overridden (its `out/` lands there too), then runs
`dagml run COPY --in-process` and `dagml run COPY` (the default embedded
cluster) one after the other, each from a fresh output directory. For each run
it prints the wall time, the peak resident memory of the whole process tree
(`ru_maxrss` from wait4: the largest of the process and the descendants it
waited for) and the r2 / rmse from the run's metrics.json, side by side, then
whether the two runs' metrics are identical. The generated data are deleted
afterwards (unless --keep).

Not a timed test: memory is not timing-sensitive, but the wall times are only
honest on a quiet machine (take /work/BENCH.lock around a timing sitting).

Usage: python3 bench/memory.py [--rows N] [--partitions N] [--modes in-process,embedded]
                               [--dagml PATH] [--keep] [--tmp DIR]
Run from the repository root, with target/release/dagml built. 10^9 rows need
~17 GB free under --tmp (the default is the system's temporary directory).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pipeline_copy(rows, partitions):
    """gauss_linreg.toml with its `rows` and `partitions` overridden."""
    with open(os.path.join(ROOT, "pipelines", "gauss_linreg.toml")) as f:
        text = f.read()
    text, n_rows = re.subn(r"(?m)^rows = [0-9_]+$", f"rows = {rows}", text)
    text, n_parts = re.subn(
        r"(?m)^partitions = [0-9_]+$", f"partitions = {partitions}", text
    )
    if n_rows != 1 or n_parts != 1:
        sys.exit("pipelines/gauss_linreg.toml no longer has one `rows =` and one `partitions =` line")
    return text


def measure(cmd, cwd):
    """Run `cmd` in `cwd` (its output to run.log there) and wait4 it: wall seconds,
    the tree's peak RSS in kB (ru_maxrss: the largest of the process and the
    descendants it waited for), exit code, user and system CPU seconds."""
    with open(os.path.join(cwd, "run.log"), "wb") as log:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall": wall,
        "maxrss_kb": ru.ru_maxrss,
        "code": p.returncode,
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--partitions", type=int, default=None, help="default: rows / 10^6")
    ap.add_argument("--modes", default="in-process,embedded")
    ap.add_argument("--dagml", default=os.path.join(ROOT, "target", "release", "dagml"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--tmp", default=None, help="where the temporary directory goes")
    ap.add_argument("--extra", default="", help="more arguments for `dagml run`, space-separated")
    a = ap.parse_args()
    parts = a.partitions or max(1, a.rows // 1_000_000)
    if not os.path.exists(a.dagml):
        sys.exit(f"{a.dagml} does not exist: run `cargo build --release` first, or pass --dagml")
    modes = [m for m in a.modes.split(",") if m]
    for m in modes:
        if m not in ("in-process", "embedded"):
            sys.exit(f"unknown mode `{m}`: the modes are in-process and embedded")
    work = tempfile.mkdtemp(prefix="dagml-memory-", dir=a.tmp)
    results = {}
    try:
        for m in modes:
            d = os.path.join(work, m)
            os.makedirs(d)
            toml = os.path.join(d, "gauss_linreg.toml")
            with open(toml, "w") as f:
                f.write(pipeline_copy(a.rows, parts))
            cmd = [a.dagml, "run", toml] + (["--in-process"] if m == "in-process" else [])
            cmd += a.extra.split()
            print(f"# {m}: {' '.join(cmd)}", flush=True)
            r = measure(cmd, d)
            metrics_path = os.path.join(d, "out", "gauss_linreg", "metrics.json")
            if r["code"] != 0 or not os.path.exists(metrics_path):
                with open(os.path.join(d, "run.log")) as f:
                    tail = f.read()[-2000:]
                sys.exit(f"`{' '.join(cmd)}` failed (exit {r['code']}):\n{tail}")
            with open(metrics_path, "rb") as f:
                raw = f.read()
            r["metrics_raw"] = raw
            r["metrics"] = json.loads(raw)
            results[m] = r
            # The next mode gets the disk back: this one's data are no longer needed.
            if not a.keep:
                shutil.rmtree(os.path.join(d, "out"), ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"# kept {work}")

    def scores(r):
        found = {}

        def walk(x):
            if isinstance(x, dict):
                for k, v in x.items():
                    if k in ("r2", "rmse") and isinstance(v, (int, float)):
                        found[k] = v
                    else:
                        walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)

        walk(r["metrics"])
        return found

    print(f"\ngauss_linreg, {a.rows:,} rows in {parts:,} partitions")
    print(f"{'mode':<12} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'r2':>20} {'rmse':>20}")
    for m, r in results.items():
        s = scores(r)
        print(
            f"{m:<12} {r['wall']:>8.1f} {r['user'] + r['sys']:>8.1f} {r['maxrss_kb'] / 1024:>12.0f}"
            f" {s.get('r2', float('nan')):>20.17g} {s.get('rmse', float('nan')):>20.17g}"
        )
    if len(results) > 1:
        raws = [r["metrics_raw"] for r in results.values()]
        print("metrics.json identical across modes:", "yes" if all(x == raws[0] for x in raws) else "NO")


if __name__ == "__main__":
    main()
