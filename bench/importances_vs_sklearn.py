"""Feature importances: dagml's against scikit-learn's on the same data.

Six integer features (32 levels, so dagml's bins are the values themselves);
the label depends on x0 and x3 (through a sum with noise) and on x1; x2, x4
and x5 are noise. A decision tree (max_depth 6) and a forest (100 trees,
max_depth 8) in both. Run from the repository root after `cargo build`:

    python3 bench/importances_vs_sklearn.py [path/to/dagml]

Measured 2026-12-01 (scikit-learn 1.9.1):
    sk tree      [0.468  0.4267 0.0032 0.0946 0.0026 0.005 ]
    dagml tree   [0.468  0.4277 0.0032 0.0946 0.0025 0.004 ]
    sk forest    [0.605  0.2904 0.0182 0.0487 0.0193 0.0185]
    dagml forest [0.5992 0.2958 0.0187 0.0492 0.0186 0.0184]
The tree differs only where equal-gain splits are broken differently; the
forests by their different bootstrap and feature draws.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

PIPELINE = """
[pipeline]
name = "importances"
seed = 1
[sources.d]
kind = "csv"
path = "d.csv"
[models.tree]
estimator = "decision_tree"
input = "d"
target = "y"
params = { max_depth = 6 }
[models.forest]
estimator = "random_forest"
input = "d"
target = "y"
params = { n_trees = 100, max_depth = 8 }
[outputs.tree_file]
kind = "model"
model = "tree"
path = "tree.model"
[outputs.forest_file]
kind = "model"
model = "forest"
path = "forest.model"
"""


def main():
    dagml = Path(sys.argv[1] if len(sys.argv) > 1 else "target/debug/dagml").resolve()
    rng = np.random.RandomState(0)
    n = 3000
    x = rng.randint(0, 32, size=(n, 6)).astype(float)
    y = ((2 * x[:, 0] + x[:, 3] / 2 + rng.randint(0, 8, size=n)) > 36).astype(int) + (
        x[:, 1] > 26
    ).astype(int)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        with open(d / "d.csv", "w") as f:
            f.write("x0,x1,x2,x3,x4,x5,y\n")
            for row, t in zip(x, y):
                f.write(",".join(str(int(v)) for v in row) + f",c{t}\n")
        (d / "p.toml").write_text(PIPELINE)
        subprocess.run([dagml, "run", "p.toml", "--threads", "2", "-q"], cwd=d, check=True,
                       stdout=subprocess.DEVNULL)
        ours = {}
        for m in ["tree", "forest"]:
            out = subprocess.run([dagml, "inspect", f"{m}.model", "--format", "json"], cwd=d,
                                 check=True, capture_output=True, text=True).stdout
            ours[m] = np.array([w["value"] for w in json.loads(out)["learned"]["importances"]])
    sk_tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(x, y).feature_importances_
    sk_forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(
        x, y).feature_importances_
    for name, a, b in [("tree", sk_tree, ours["tree"]), ("forest", sk_forest, ours["forest"])]:
        print(f"sk {name:<9}", np.round(a, 4))
        print(f"dagml {name:<6}", np.round(b, 4))
        print(f"  largest difference {np.abs(a - b).max():.4f}; same ranking of the top 2: "
              f"{list(np.argsort(-a)[:2]) == list(np.argsort(-b)[:2])}")


if __name__ == "__main__":
    main()
