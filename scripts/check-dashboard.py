#!/usr/bin/env python3
"""The Grafana dashboard (infra/grafana/ticketing.json) and the alert rules (infra/prometheus/
alerts.yml) name only metrics the core exports: every `ticketing_*` or `process_*` name they use
must be defined in regional-core/src (a renamed metric would leave a panel or an alert blind).
Also: the dashboard is valid JSON, every panel has a query, and panel ids are unique."""

import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = re.compile(r"\b((?:ticketing|process)_[a-z_]+)")
SUFFIXES = ("_bucket", "_sum", "_count")


def exported():
    names = set()
    for path in glob.glob(os.path.join(ROOT, "regional-core/src/**/*.rs"), recursive=True):
        names.update(NAME.findall(open(path).read()))
    return names


def base(name):
    """The name the code registers: without a histogram's suffixes, and without `_total` (the
    Prometheus client adds it to every counter)."""
    for s in SUFFIXES + ("_total",):
        if name.endswith(s) and name[: -len(s)] in known:
            return name[: -len(s)]
    return name


known = exported()
errors = []
dash = json.load(open(os.path.join(ROOT, "infra/grafana/ticketing.json")))
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    errors.append("the dashboard has two panels with one id")
used = {}
for p in dash["panels"]:
    if not p.get("targets"):
        errors.append(f"panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        for n in NAME.findall(t["expr"]):
            used.setdefault(base(n), f"dashboard panel {p['title']!r}")
for n in NAME.findall(open(os.path.join(ROOT, "infra/prometheus/alerts.yml")).read()):
    used.setdefault(base(n), "infra/prometheus/alerts.yml")
for n, where in sorted(used.items()):
    if n not in known:
        errors.append(f"{where} uses {n}, which the core does not export")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"dashboard: {len(dash['panels'])} panels; {len(used)} metrics, all exported by the core")
