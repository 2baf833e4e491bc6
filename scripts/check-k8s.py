#!/usr/bin/env python3
"""Checks the Kubernetes manifests offline (the test command's lint stage).

Renders infra/k8s/base and each overlay the way `kubectl kustomize` would, for the subset of
kustomize the overlays use (kustomize itself cannot be installed on the test machines), then:

  1. validates every rendered object against the Kubernetes schemas (kubernetes-validate, strict:
     an unknown field is an error);
  2. checks what the schemas cannot: the Deployment's probes, resources, security context, a grace
     period longer than the drain, the gRPC port, config and secrets by reference;
  3. runs the policy scanner (checkov) on each rendered environment; a finding fails the check
     unless the manifest skips it with a `checkov.io/skip` annotation that says why.

Supported kustomize fields: resources (files and directories), namespace, images (name, newName,
newTag, digest), patches (a file merged as maps, refusing lists, or JSON 6902 `replace`/`add` with a
target). Anything else is refused, so that what is checked is what kubectl would apply.

  scripts/check-k8s.py [--render DIR]   (--render: also write each environment's YAML to DIR)
"""

import copy
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "infra", "k8s")
KUBERNETES_VERSION = "1.33"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
KNOWN = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


def fail(msg):
    print(f"check-k8s: {msg}", file=sys.stderr)
    sys.exit(1)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def merge(target, patch, where):
    """A strategic merge limited to maps: keys merge, scalars replace, lists are refused."""
    for key, value in patch.items():
        if isinstance(value, list):
            fail(f"{where}: a list under '{key}' (use a JSON 6902 patch with a target)")
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value, where)
        else:
            target[key] = copy.deepcopy(value)


def json6902(obj, ops, where):
    for op in ops:
        if op.get("op") not in ("replace", "add"):
            fail(f"{where}: only replace and add are supported, not {op.get('op')}")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = obj
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        last = parts[-1]
        if isinstance(node, list):
            if last == "-":
                node.append(op["value"])
            elif op["op"] == "add":
                node.insert(int(last), op["value"])
            else:
                node[int(last)] = op["value"]
        else:
            if op["op"] == "replace" and last not in node:
                fail(f"{where}: replace of a missing {op['path']}")
            node[last] = op["value"]


def image_name(ref):
    """`registry/name:tag@sha256:…` without its tag and digest."""
    ref = ref.split("@")[0]
    head, _, last = ref.rpartition("/")
    return (head + "/" if head else "") + last.split(":")[0]


def containers(obj):
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") if "template" in spec else None
    if obj["kind"] == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    if not pod:
        return []
    return pod.get("containers", []) + pod.get("initContainers", [])


def render(directory):
    """The objects `kubectl kustomize directory` gives, for the supported subset."""
    kfile = os.path.join(directory, "kustomization.yaml")
    (k,) = load_docs(kfile)
    unknown = set(k) - KNOWN
    if unknown:
        fail(f"{kfile}: fields this check cannot render: {sorted(unknown)}")
    objects = []
    for res in k.get("resources", []):
        path = os.path.normpath(os.path.join(directory, res))
        objects += render(path) if os.path.isdir(path) else load_docs(path)
    by_id = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    if len(by_id) != len(objects):
        fail(f"{kfile}: two objects with the same kind and name")
    for patch in k.get("patches", []):
        if "path" in patch:
            for doc in load_docs(os.path.join(directory, patch["path"])):
                key = (doc["kind"], doc["metadata"]["name"])
                if key not in by_id:
                    fail(f"{patch['path']}: patches {key}, which the resources do not have")
                body = {x: y for x, y in doc.items() if x not in ("apiVersion", "kind", "metadata")}
                merge(by_id[key], body, patch["path"])
        else:
            t = patch["target"]
            key = (t["kind"], t["name"])
            if key not in by_id:
                fail(f"{kfile}: a patch targets {key}, which the resources do not have")
            json6902(by_id[key], yaml.safe_load(patch["patch"]), kfile)
    for image in k.get("images", []):
        for obj in objects:
            for c in containers(obj):
                if image_name(c["image"]) != image["name"]:
                    continue
                new = image.get("newName", image["name"])
                if "digest" in image:
                    c["image"] = f"{new}@{image['digest']}"
                else:
                    c["image"] = f"{new}:{image.get('newTag', 'latest')}"
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    return objects


def check_core(objs, env):
    """What the schemas cannot say: the issue's list for the core's Deployment and its neighbours."""
    kinds = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    need = [("Deployment", "ticketing-core"), ("Service", "ticketing-core"),
            ("Service", "ticketing-core-checkin"), ("HorizontalPodAutoscaler", "ticketing-core"),
            ("PodDisruptionBudget", "ticketing-core"), ("Job", "ticketing-core-migrate"),
            ("NetworkPolicy", "ticketing-core"), ("ConfigMap", "ticketing-core-config")]
    for key in need:
        if key not in kinds:
            fail(f"{env}: no {key[0]} {key[1]}")
    dep = kinds[("Deployment", "ticketing-core")]
    pod = dep["spec"]["template"]["spec"]
    (core,) = pod["containers"]
    where = f"{env}: the core's container"
    if core.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/livez":
        fail(f"{where}: its liveness probe is not /livez")
    if core.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        fail(f"{where}: its readiness probe is not /readyz")
    res = core.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        fail(f"{where}: resources need requests and limits")
    sc = core.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False or not sc.get("readOnlyRootFilesystem") \
            or sc.get("capabilities", {}).get("drop") != ["ALL"] or not pod["securityContext"].get("runAsNonRoot"):
        fail(f"{where}: not non-root, read-only, without privilege escalation and capabilities")
    if "replicas" in dep["spec"]:
        fail(f"{env}: the Deployment sets replicas, which the HorizontalPodAutoscaler owns (an apply would reset it)")
    if "grpc" not in {p["name"] for p in core["ports"]}:
        fail(f"{where}: no gRPC (check-in) port")
    config = kinds[("ConfigMap", "ticketing-core-config")]["data"]
    drain = int(config.get("SHUTDOWN_DRAIN_SECS", 5)) + int(config.get("CORE_REQUEST_TIMEOUT_SECS", 15))
    if pod.get("terminationGracePeriodSeconds", 30) <= drain:
        fail(f"{env}: terminationGracePeriodSeconds must exceed the drain plus the longest request ({drain} s)")
    refs = {r.get("configMapRef", {}).get("name") or r.get("secretRef", {}).get("name") for r in core.get("envFrom", [])}
    if not {"ticketing-core-config", "ticketing-core-secrets"} <= refs:
        fail(f"{where}: config and secrets must come by reference (envFrom)")
    for e in core.get("env", []):
        if any(s in e["name"] for s in ("KEY", "SECRET", "PASSWORD", "DATABASE_URL")) and "value" in e:
            fail(f"{where}: {e['name']} is written in the manifest; reference a Secret")
    for key, value in config.items():
        if any(s in key for s in ("SECRET", "PASSWORD", "SIGNING_KEY", "DATABASE_URL", "SMTP_URL")):
            fail(f"{env}: the ConfigMap holds {key}; secrets belong in ticketing-core-secrets")


def main():
    render_dir = None
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        render_dir = sys.argv[2]
    elif len(sys.argv) != 1:
        fail(__doc__)
    envs = {"base": os.path.join(K8S, "base")}
    for name in sorted(os.listdir(os.path.join(K8S, "overlays"))):
        envs[name] = os.path.join(K8S, "overlays", name)
    with tempfile.TemporaryDirectory() as tmp:
        out = render_dir or tmp
        os.makedirs(out, exist_ok=True)
        for env, directory in envs.items():
            objs = render(directory)
            check_core(objs, env)
            path = os.path.join(out, f"{env}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump_all(objs, f, sort_keys=False)
            bindir = os.path.dirname(sys.executable)
            r = subprocess.run([os.path.join(bindir, "kubernetes-validate"), "--strict", "--quiet",
                                "-k", KUBERNETES_VERSION, path], capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stdout + r.stderr, file=sys.stderr)
                fail(f"{env}: the Kubernetes {KUBERNETES_VERSION} schemas refuse it")
            if env == "base":
                # The base names the image without a digest; the overlays are what ships.
                print(f"check-k8s: base: {len(objs)} objects valid for Kubernetes {KUBERNETES_VERSION}")
                continue
            r = subprocess.run([os.path.join(bindir, "checkov"), "--quiet", "--compact", "--framework",
                                "kubernetes", "--skip-download", "-f", path],
                               capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
            if r.returncode != 0:
                print(r.stdout + r.stderr, file=sys.stderr)
                fail(f"{env}: checkov found what no annotation justifies")
            print(f"check-k8s: {env}: {len(objs)} objects valid for Kubernetes {KUBERNETES_VERSION}, checkov clean")


if __name__ == "__main__":
    main()
