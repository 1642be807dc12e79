"""Checks the deployment files offline (run by deploy/check.sh, in CI).

In: deploy/ (Dockerfile, compose.yaml, dagml.env.example, k8s/) and the dagml
binary (its --help says which flags exist). Out: one line per check, and exit
status 0 only when all of them pass. Must not: reach the network, or need a
Kubernetes cluster, Docker or kustomize.

* Kustomize: every kustomization under deploy/k8s is rendered by `render`
  below, a small renderer of the subset these files use (resources, patches
  as strategic-merge files, images). It is not kustomize: it refuses any other
  field rather than ignoring it. When a `kubectl` is on PATH, its `kubectl
  kustomize` output is compared with ours, object by object.
* Every base manifest and every rendered output validates, strictly (no
  unknown fields), against the Kubernetes API schemas of K8S_VERSION
  (kubernetes-validate, pinned in deploy/requirements.txt).
* Every flag given to `dagml` in a manifest or in compose.yaml is one that
  `dagml SUBCOMMAND --help` lists.
* compose.yaml parses and has what the deployment relies on; the Dockerfile
  passes our rules (dockerfile-parse for the structure).
"""

import copy
import os
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import yaml
from dockerfile_parse import DockerfileParser

K8S_VERSION = "1.33.0"
HERE = os.path.dirname(os.path.abspath(__file__))
K8S = os.path.join(HERE, "k8s")
KUSTOMIZATIONS = ["base", "overlays/small", "overlays/large"]

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------------------
# A renderer for the subset of Kustomize used here.

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}
# Strategic merge: lists of objects merged by these keys (as Kubernetes'
# patchMergeKey says for these fields); other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumes": "name",
    "ports": "containerPort",
}


class RenderError(Exception):
    pass


def merge(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            at = [i for i, x in enumerate(out) if isinstance(x, dict) and x.get(mk) == item.get(mk)]
            if at:
                out[at[0]] = merge(out[at[0]], item, None)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def ident(obj):
    return (obj.get("kind"), obj.get("metadata", {}).get("name"))


def set_images(obj, images):
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {}))
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        name, _, tag = c.get("image", "").partition(":")
        for im in images:
            if im.get("name") == name:
                c["image"] = im.get("newName", name) + ":" + im.get("newTag", tag)


def render(folder):
    path = os.path.join(folder, "kustomization.yaml")
    (k,) = load_all(path)
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise RenderError(f"{path}: fields this renderer does not know: {sorted(unknown)}")
    objs = []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(folder, r))
        objs.extend(render(p) if os.path.isdir(p) else load_all(p))
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise RenderError(f"{path}: only `patches: - path: FILE` is rendered here")
        for p in load_all(os.path.join(folder, patch["path"])):
            hits = [i for i, o in enumerate(objs) if ident(o) == ident(p)]
            if len(hits) != 1:
                raise RenderError(f"{path}: patch {patch['path']} matches {len(hits)} objects")
            objs[hits[0]] = merge(objs[hits[0]], p)
    for o in objs:
        set_images(o, k.get("images", []))
    seen = [ident(o) for o in objs]
    if len(seen) != len(set(seen)):
        raise RenderError(f"{path}: an object is defined twice")
    return objs


# ---------------------------------------------------------------------------
# The flags dagml has.

_help = {}


def flags_of(dagml, sub):
    if sub not in _help:
        out = subprocess.run([dagml, sub, "--help"], capture_output=True, text=True, timeout=60)
        _help[sub] = set(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))
    return _help[sub]


def check_args(dagml, where, argv):
    """argv: the arguments after `dagml`."""
    if not argv:
        return check(False, f"{where}: no dagml subcommand")
    sub = argv[0]
    known = flags_of(dagml, sub)
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--") and a.split("=")[0] not in known]
    check(sub in ("scheduler", "worker", "run") and not bad,
          f"{where}: `dagml {sub}` knows every flag given ({', '.join(bad) or 'all known'})")


def pod_spec(obj):
    spec = obj.get("spec", {})
    return spec.get("template", {}).get("spec")


# ---------------------------------------------------------------------------


def check_k8s(dagml):
    rendered = {}
    for name in KUSTOMIZATIONS:
        try:
            rendered[name] = render(os.path.join(K8S, name))
            check(True, f"k8s/{name}: rendered ({len(rendered[name])} objects)")
        except (RenderError, OSError, yaml.YAMLError) as e:
            check(False, f"k8s/{name}: {e}")
    kubectl = shutil.which("kubectl")
    for name, objs in rendered.items():
        if not kubectl:
            continue
        out = subprocess.run([kubectl, "kustomize", os.path.join(K8S, name)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            check(False, f"k8s/{name}: kubectl kustomize failed: {out.stderr.strip()}")
            continue
        theirs = {ident(o): o for o in yaml.safe_load_all(out.stdout) if o}
        ours = {ident(o): o for o in objs}
        check(theirs == ours, f"k8s/{name}: our rendering equals `kubectl kustomize`'s")
    if not kubectl:
        print("note: no kubectl on PATH: the renderer is not compared with kustomize here")

    base = os.path.join(K8S, "base")
    files = [os.path.join(base, f) for f in sorted(os.listdir(base))
             if f.endswith(".yaml") and f != "kustomization.yaml"]
    docs = [(os.path.relpath(f, HERE), d) for f in files for d in load_all(f)]
    docs += [(f"k8s/{n} (rendered)", d) for n, objs in rendered.items() for d in objs]
    for where, d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            check(True, f"{where}: {d['kind']}/{d['metadata']['name']} valid for Kubernetes {K8S_VERSION}")
        except kubernetes_validate.ValidationError as e:
            check(False, f"{where}: {d.get('kind')}/{d.get('metadata', {}).get('name')}: {e.message} at {list(e.path)}")
        except Exception as e:  # an unknown kind or version: a failure too
            check(False, f"{where}: {d.get('kind')}: {e}")

    for name, objs in rendered.items():
        by = {ident(o): o for o in objs}
        sts = by.get(("StatefulSet", "dagml-worker"))
        dep = by.get(("Deployment", "dagml-scheduler"))
        job = by.get(("Job", "dagml-run"))
        cm = by.get(("ConfigMap", "dagml-pipeline"))
        if not check(all([sts, dep, job, cm]), f"k8s/{name}: scheduler, workers, job and pipeline present"):
            continue
        for kind, o in [("scheduler", dep), ("workers", sts), ("job", job)]:
            for c in pod_spec(o)["containers"]:
                check(c.get("command") == ["dagml"], f"k8s/{name}: {kind} runs dagml")
                check_args(dagml, f"k8s/{name}: {kind}", c.get("args", []))
                probes = [c.get("readinessProbe"), c.get("livenessProbe")]
                if kind != "job":
                    check(all(p and "grpc" in p for p in probes),
                          f"k8s/{name}: {kind} readiness and liveness are gRPC health probes")
        w = pod_spec(sts)["containers"][0]
        env = {e["name"]: e for e in w.get("env", [])}
        res = {e.get("valueFrom", {}).get("resourceFieldRef", {}).get("resource"): n for n, e in env.items()}
        args = w.get("args", [])
        check(f"--nthreads=$({res.get('limits.cpu')})" in args
              and f"--memory-limit=$({res.get('requests.memory')})" in args,
              f"k8s/{name}: --nthreads and --memory-limit come from the pod's resources (Downward API)")
        r = w.get("resources", {})
        check(parse_qty(r["requests"]["memory"]) < parse_qty(r["limits"]["memory"]),
              f"k8s/{name}: the worker's memory request (its --memory-limit) is below its pod limit")
        check(all(v.get("valueFrom", {}).get("resourceFieldRef", {}).get("divisor") == "1"
                  for v in env.values() if "resourceFieldRef" in v.get("valueFrom", {})),
              f"k8s/{name}: Downward API values in whole CPUs and bytes (divisor 1)")
        check(env.get("DAGML_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") is not None,
              f"k8s/{name}: the token comes from a Secret")
        grace = pod_spec(sts).get("terminationGracePeriodSeconds", 30)
        drain = [a for a in args if a.startswith("--drain-timeout=")]
        check(bool(drain) and float(drain[0].split("=")[1].rstrip("s")) < grace,
              f"k8s/{name}: --drain-timeout is below terminationGracePeriodSeconds ({grace} s)")
        check(any(t["metadata"]["name"] == "data" for t in sts["spec"].get("volumeClaimTemplates", [])),
              f"k8s/{name}: each worker has a volume of its own for its data root")
        check(("PodDisruptionBudget", "dagml-worker") in by, f"k8s/{name}: workers have a PodDisruptionBudget")
        root = [a.split("=", 1)[1] for a in args if a.startswith("--data-root=")]
        wd = pod_spec(job)["containers"][0].get("workingDir", "")
        check(bool(root) and wd.startswith(root[0].rstrip("/") + "/"),
              f"k8s/{name}: the Job starts in a folder inside the workers' data root ({wd})")


def parse_qty(q):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    return float(m.group(1)) * units.get(m.group(2), 1)


def check_compose(dagml):
    path = os.path.join(HERE, "compose.yaml")
    try:
        (c,) = load_all(path)
    except (yaml.YAMLError, ValueError) as e:
        check(False, f"compose.yaml parses: {e}")
        return
    check(True, "compose.yaml parses")
    services = c.get("services", {})
    workers = [n for n in services if n.startswith("worker")]
    check("scheduler" in services and len(workers) == 3, "compose.yaml: a scheduler and three workers")
    vols = set(c.get("volumes", {}))
    for n, s in services.items():
        envf = s.get("env_file", [])
        paths = [e["path"] if isinstance(e, dict) else e for e in envf]
        check(paths == ["dagml.env"], f"compose.yaml: {n} takes the token from dagml.env")
        check("DAGML_TOKEN" not in str(s.get("environment", "")), f"compose.yaml: {n} has no token inline")
        check(isinstance(s.get("command"), list), f"compose.yaml: {n}'s command is a list (no shell)")
        check_args(dagml, f"compose.yaml: {n}", s.get("command", []))
    for n in workers:
        s = services[n]
        cmd = s["command"]
        mounts = [v.split(":") for v in s.get("volumes", [])]
        check(any(m[0] in vols and m[1] == "/data" for m in mounts) and "--data-root=/data" in cmd,
              f"compose.yaml: {n} keeps its data root /data on a named volume of its own")
        check(f"--advertise={n}:7071" in cmd and "scheduler:7070" in cmd,
              f"compose.yaml: {n} dials the scheduler and advertises its own name")
        check(s.get("stop_grace_period") == "30s", f"compose.yaml: {n} gets 30 s to drain on stop")
    own = [v for n in workers for v in services[n].get("volumes", []) if v.split(":")[1] == "/data"]
    check(len(set(v.split(":")[0] for v in own)) == len(workers), "compose.yaml: no two workers share a data root")
    # The run folder is one: the workers stage outputs there, the client commits them.
    runs = {n: [v.split(":")[0] for v in services[n].get("volumes", []) if v.split(":")[1] == "/data/run"]
            for n in workers + ["client"]}
    check(all(r == ["./run"] for r in runs.values()),
          f"compose.yaml: the client and every worker share ./run as /data/run: {runs}")
    example = os.path.join(HERE, "dagml.env.example")
    with open(example, encoding="utf-8") as f:
        lines = [l for l in f.read().splitlines() if l and not l.startswith("#")]
    check(len(lines) == 1 and lines[0].startswith("DAGML_TOKEN="), "dagml.env.example sets DAGML_TOKEN only")
    with open(os.path.join(HERE, ".gitignore"), encoding="utf-8") as f:
        check("dagml.env" in f.read().split(), "deploy/.gitignore keeps a real dagml.env out of git")


def check_dockerfile():
    path = os.path.join(HERE, "Dockerfile")
    p = DockerfileParser(path=path)
    ins = p.structure
    froms = [i for i in ins if i["instruction"] == "FROM"]
    check(len(froms) >= 2, "Dockerfile: multi-stage (a build stage and a runtime stage)")
    for f in froms:
        image = f["value"].split()[0]
        name, _, tag = image.partition(":")
        check(bool(tag) and tag != "latest" and "$" not in image,
              f"Dockerfile: base image `{image}` is pinned to a tag, not latest")
    last = max(i["startline"] for i in froms)
    final = [i for i in ins if i["startline"] > last]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    check(bool(users) and users[-1].split(":")[0] not in ("root", "0"), "Dockerfile: the runtime stage runs as a non-root USER")
    check(not any(i["instruction"] == "RUN" for i in final),
          "Dockerfile: the runtime stage runs nothing at build time (no shell in it)")
    for kw in ("CMD", "ENTRYPOINT", "HEALTHCHECK"):
        got = [i["value"] for i in final if i["instruction"] == kw]
        exec_form = got and all(re.search(r"(^|\s)CMD\s+\[|^\[", v.strip()) for v in got)
        check(bool(exec_form), f"Dockerfile: {kw} in exec form (a JSON array: no shell needed)")
    hc = " ".join(i["value"] for i in final if i["instruction"] == "HEALTHCHECK")
    check('"health"' in hc, "Dockerfile: the health check is `dagml health`")
    for i in ins:
        if i["instruction"] == "ADD":
            check(not re.search(r"https?://", i["value"]), f"Dockerfile: ADD of no URL (line {i['startline'] + 1})")
        if i["instruction"] in ("COPY", "ADD"):
            check("target" not in i["value"].split()[:-1],
                  f"Dockerfile: {i['instruction']} line {i['startline'] + 1} copies no build output from the context")
    check(os.path.exists(path + ".dockerignore"), "Dockerfile: has its own .dockerignore (target/ stays out)")
    with open(path + ".dockerignore", encoding="utf-8") as f:
        ignore = f.read().split("\n")
    check("*" in ignore and "!target/" not in ignore, "Dockerfile.dockerignore: everything but the sources stays out")


def main():
    if len(sys.argv) != 2:
        print("usage: check.py DAGML_BINARY", file=sys.stderr)
        return 2
    dagml = sys.argv[1]
    check_k8s(dagml)
    check_compose(dagml)
    check_dockerfile()
    print(f"{len(failures)} failed" if failures else "every deployment check passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
