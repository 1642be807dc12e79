"""The model server against tritonclient's HTTP client (the Open Inference
Protocol as NVIDIA's and KServe's clients speak it).

Usage: serve_conformance.py URL CSV OUT_JSON [TOKEN]

Checks health, server and model metadata, model readiness; infers on every
model with binary tensors (tritonclient's default; NaN and "" carry the CSV's
missing cells) and with JSON tensors (rows without missing numbers); checks
the errors for an unknown model and a missing token. Writes the predictions to
OUT_JSON for the Rust test to compare with `dagml predict`'s, bit for bit.
Prints "all checks passed" last.
"""

import csv
import json
import math
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

NA = {"", "NA", "N/A", "NaN", "null"}


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def column(rows, name, datatype):
    cells = [r[name] for r in rows]
    missing = [c in NA for c in cells]
    if datatype == "BYTES":
        return np.array(["" if m else c for c, m in zip(cells, missing)], dtype=object), "BYTES"
    if datatype == "BOOL":
        return np.array([c.lower() == "true" for c in cells], dtype=bool), "BOOL"
    if datatype.startswith("INT") or datatype.startswith("UINT"):
        if any(missing):
            # Integers have no missing value on the wire: send them as FP64
            # with NaN, which the server casts back without loss.
            return np.array([math.nan if m else float(c) for c, m in zip(cells, missing)]), "FP64"
        return np.array([int(c) for c in cells], dtype=np.int64), "INT64"
    return np.array([math.nan if m else float(c) for c, m in zip(cells, missing)]), "FP64"


def inputs_for(meta, rows, binary):
    out = []
    for i in meta["inputs"]:
        arr, dt = column(rows, i["name"], i["datatype"])
        x = httpclient.InferInput(i["name"], [len(rows)], dt)
        x.set_data_from_numpy(arr, binary_data=binary)
        out.append(x)
    return out


def answers(result, meta):
    got = {}
    for o in meta["outputs"]:
        a = result.as_numpy(o["name"])
        if a.dtype == object:
            got[o["name"]] = [v.decode() if isinstance(v, bytes) else str(v) for v in a]
        else:
            got[o["name"]] = [float(v) for v in a]
    return got


def main():
    url, csv_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    # A fresh dict per call: tritonclient adds Inference-Header-Content-Length
    # to the dict it is given, which would then go with the next request.
    def h():
        return {"Authorization": f"Bearer {token}"} if token else None

    c = httpclient.InferenceServerClient(url)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))[:200]

    check(c.is_server_live(), "server live")
    check(c.is_server_ready(headers=h()), "server ready")
    if token:
        try:
            c.get_server_metadata()
            check(False, "metadata without the token is refused")
        except InferenceServerException as e:
            check("Bearer" in str(e), f"metadata without the token is refused ({e})")
    sm = c.get_server_metadata(headers=h())
    check("binary_tensor_data" in sm["extensions"], "server metadata names binary_tensor_data")
    index = c.get_model_repository_index(headers=h())
    names = sorted(m["name"] for m in index)
    check(len(names) >= 2, f"the repository index lists the models: {names}")

    report = {}
    for name in names:
        check(c.is_model_ready(name, headers=h()), f"{name} ready")
        meta = c.get_model_metadata(name, headers=h())
        check(meta["name"] == name and meta["inputs"], f"{name} metadata has inputs")
        check(meta["outputs"][0]["name"] == "prediction", f"{name} outputs prediction first")
        r = c.infer(name, inputs_for(meta, rows, True), headers=h())
        binary = answers(r, meta)
        check(len(binary["prediction"]) == len(rows), f"{name}: {len(rows)} binary predictions")
        check(r.get_response()["model_version"] == meta["versions"][-1], f"{name}: the version answered")
        # JSON tensors carry no NaN: the rows with every number present.
        numeric = [i["name"] for i in meta["inputs"] if i["datatype"] != "BYTES"]
        full = [k for k, row in enumerate(rows) if all(row[n] not in NA for n in numeric)]
        sub = [rows[k] for k in full]
        outs = [httpclient.InferRequestedOutput(o["name"], binary_data=False) for o in meta["outputs"]]
        r = c.infer(name, inputs_for(meta, sub, False), outputs=outs, headers=h())
        js = answers(r, meta)
        check(len(js["prediction"]) == len(sub), f"{name}: {len(sub)} JSON predictions")
        report[name] = {"binary": binary, "json_rows": full, "json": js}

    # The statistics extension: each model was asked twice (binary, JSON).
    check("statistics" in sm["extensions"], "server metadata names statistics")
    stats = c.get_inference_statistics(headers=h())["model_stats"]
    for name in names:
        s = [m for m in stats if m["name"] == name]
        check(len(s) == 1, f"{name}: one statistics entry")
        s = s[0]
        check(int(s["inference_count"]) == 2, f"{name}: 2 requests counted ({s})")
        check(int(s["inference_stats"]["success"]["count"]) == 2, f"{name}: 2 successes ({s})")
    one = c.get_inference_statistics(names[0], headers=h())["model_stats"]
    check([m["name"] for m in one] == [names[0]], f"statistics of one model: {one}")

    try:
        c.infer("no_such_model", [], headers=h())
        check(False, "an unknown model is an error")
    except InferenceServerException as e:
        check("no model `no_such_model`" in str(e), f"an unknown model is an error ({e})")

    with open(out_path, "w") as f:
        json.dump(report, f)
    print("all checks passed")


if __name__ == "__main__":
    main()
