"""bench/serve.sh's set-up: rows, the scikit-learn twin of the dagml forest,
MLServer's settings, and the request bodies of both servers.

Usage: serve_prepare.py WORKDIR
"""

import json
import os
import sys

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

FEATURES = 20


def main():
    work = sys.argv[1]
    x, y = make_classification(
        n_samples=5000, n_features=FEATURES, n_informative=8, n_classes=3, random_state=5
    )
    names = [f"f{i}" for i in range(FEATURES)]
    with open(os.path.join(work, "train.csv"), "w") as f:
        f.write(",".join(names + ["y"]) + "\n")
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + f",c{label}\n")
    model = RandomForestClassifier(n_estimators=100, random_state=5).fit(x[:4000], y[:4000])
    ml = os.path.join(work, "mlserver")
    os.makedirs(ml, exist_ok=True)
    joblib.dump(model, os.path.join(ml, "model.joblib"))
    with open(os.path.join(ml, "settings.json"), "w") as f:
        json.dump({"http_port": 18081, "grpc_port": 18082, "metrics_port": 18083}, f)
    with open(os.path.join(ml, "model-settings.json"), "w") as f:
        json.dump(
            {
                "name": "forest",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            },
            f,
        )
    for n in (1, 1000):
        rows = x[4000 : 4000 + n]
        dagml = {
            "inputs": [
                {"name": names[j], "shape": [n], "datatype": "FP64", "data": [float(v) for v in rows[:, j]]}
                for j in range(FEATURES)
            ]
        }
        mls = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [n, FEATURES],
                    "datatype": "FP64",
                    "data": [float(v) for v in rows.reshape(-1)],
                }
            ]
        }
        with open(os.path.join(work, f"dagml_{n}.json"), "w") as f:
            json.dump(dagml, f)
        with open(os.path.join(work, f"mlserver_{n}.json"), "w") as f:
            json.dump(mls, f)


if __name__ == "__main__":
    main()
