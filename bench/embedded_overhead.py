"""What the embedded cluster costs (issue 11): `dagml run FILE --in-process`
against `dagml run FILE` (the default: the embedded cluster, a scheduler and
workers in the process talking over loopback gRPC and Flight), side by side.

Goals (issue 11): the tiny pipeline (a 150-row CSV) takes at most 0.1 s more on
the embedded cluster than in-process; mnist_rf and gauss_linreg at most 1.15x
their in-process time; the outputs are the same bytes.

Each workload runs RUNS times per variant, alternating (in-process, embedded,
in-process, ...), and the medians of the whole command's wall time are compared.
Every run works in a scratch folder of its own (bench/.work/NAME/VARIANT-I, with
data/, pipelines/ and bench/ linked in), so its `out/...` paths never clobber
another run's; the files under its out/ are hashed and compared with the first
in-process run's, then the folder is removed (gauss_linreg writes ~1.6 GB).

Run it through bench/embedded_overhead.sh, which builds dagml in release mode.
Usage: embedded_overhead.py [--runs N] [--only tiny,mnist_rf,gauss_linreg] [--keep]
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAGML = os.path.abspath(os.environ.get("DAGML_BIN") or os.path.join(ROOT, "target", "release", "dagml"))
WORK = os.path.join(ROOT, "bench", ".work")

# name, pipeline file (relative to the repository), goal kind, goal value
WORKLOADS = [
    ("tiny", "bench/tiny_csv.toml", "diff", 0.1),
    ("mnist_rf", "pipelines/mnist_rf.toml", "ratio", 1.15),
    ("gauss_linreg", "pipelines/gauss_linreg.toml", "ratio", 1.15),
]
VARIANTS = [("in-process", ["--in-process"]), ("embedded", [])]


def scratch(name, variant, i):
    d = os.path.join(WORK, name, f"{variant}-{i}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for link in ("data", "pipelines", "bench"):
        os.symlink(os.path.join(ROOT, link), os.path.join(d, link))
    return d


def run(cwd, pipeline, extra):
    """Wall and CPU (user + sys) seconds of one `dagml run`, in `cwd`."""
    cmd = [DAGML, "run", pipeline, "--quiet", *extra]
    with tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errf)
        # wait4 gives the child's own CPU time, not the script's.
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            errf.seek(0)
            err = errf.read().decode(errors="replace")
            sys.exit(f"`{' '.join(cmd)}` in {cwd} failed ({p.returncode}):\n{err}")
    return wall, ru.ru_utime + ru.ru_stime


def out_hashes(cwd):
    """sha256 of every file under cwd/out, by path relative to it."""
    out = os.path.join(cwd, "out")
    got = {}
    for dirpath, _, files in os.walk(out):
        for f in files:
            path = os.path.join(dirpath, f)
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            got[os.path.relpath(path, out)] = h.hexdigest()
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="runs per variant (default 3)")
    ap.add_argument("--only", default="", help="comma-separated: tiny,mnist_rf,gauss_linreg")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folders")
    a = ap.parse_args()
    only = {s for s in a.only.split(",") if s}
    unknown = only - {w[0] for w in WORKLOADS}
    if unknown:
        sys.exit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if not os.path.exists(DAGML):
        sys.exit(f"no dagml binary at {DAGML}: run bench/embedded_overhead.sh")

    rows = []
    all_ok = True
    for name, pipeline, kind, goal in WORKLOADS:
        if only and name not in only:
            continue
        wall = {v: [] for v, _ in VARIANTS}
        cpu = {v: [] for v, _ in VARIANTS}
        reference = None
        same = True
        for i in range(a.runs):
            for variant, extra in VARIANTS:
                d = scratch(name, variant, i)
                w, c = run(d, pipeline, extra)
                h = out_hashes(d)
                if not h:
                    sys.exit(f"{name}: {variant} run {i + 1} wrote nothing under {d}/out")
                if reference is None:
                    reference = h
                differs = sorted(k for k in reference.keys() | h.keys() if reference.get(k) != h.get(k))
                if differs:
                    same = False
                    print(f"  {name} {variant} run {i + 1}: differs from the first in-process run in "
                          f"{len(differs)} file(s), e.g. {differs[0]}", flush=True)
                if not a.keep:
                    shutil.rmtree(d, ignore_errors=True)
                wall[variant].append(w)
                cpu[variant].append(c)
                print(f"{name:<13} run {i + 1}  {variant:<10}  wall {w:7.2f} s  cpu {c:7.2f} s", flush=True)
        base = statistics.median(wall["in-process"])
        emb = statistics.median(wall["embedded"])
        diff, ratio = emb - base, emb / base
        met = (diff <= goal) if kind == "diff" else (ratio <= goal)
        all_ok &= met and same
        rows.append((name, pipeline, wall, cpu, base, emb, diff, ratio, kind, goal, met, same))
        if not a.keep:
            shutil.rmtree(os.path.join(WORK, name), ignore_errors=True)

    print()
    print(f"median of {a.runs} alternating runs, whole `dagml run` command, wall seconds "
          f"(cpu = user + sys of the process)")
    head = (f"{'workload':<13} {'in-process':>10} {'embedded':>9} {'diff':>7} {'ratio':>6}  "
            f"{'goal':<10} {'':<6}  {'cpu in-proc':>11} {'cpu emb':>8}  same bytes  spread (min-max)")
    print(head)
    print("-" * len(head))
    for name, _, wall, cpu, base, emb, diff, ratio, kind, goal, met, same in rows:
        g = f"+{goal:.2f} s" if kind == "diff" else f"<= {goal:.2f}x"
        spread = "  ".join(f"{v} {min(wall[v]):.2f}-{max(wall[v]):.2f}" for v, _ in VARIANTS)
        print(f"{name:<13} {base:10.2f} {emb:9.2f} {diff:+7.2f} {ratio:6.2f}  {g:<10} "
              f"{'met' if met else 'MISSED':<6}  {statistics.median(cpu['in-process']):11.2f} "
              f"{statistics.median(cpu['embedded']):8.2f}  {'yes' if same else 'NO':<10}  {spread}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
