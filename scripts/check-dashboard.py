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


def sources():
    """Every source file of the core: (path, text)."""
    return [
        (p, open(p).read()) for p in glob.glob(os.path.join(ROOT, "regional-core/src/**/*.rs"), recursive=True)
    ]


def exported(files):
    """Every metric name the code defines, and the kind of those it registers or reports as
    counters or histograms (anything else is a gauge, exposed under its own name)."""
    names, kinds = set(), {}
    for path, code in files:
        names.update(NAME.findall(code))
        # Figures reported at scrape time: `s.counter("name", ...)`, `s.gauge("name", ...)`.
        for kind, n in re.findall(r"\.(counter|gauge)\(\s*\"((?:ticketing|process)_[a-z_]+)\"", code):
            kinds[n] = kind
        # Live metrics: `registry.register("name", "help", THING.clone())`, THING's type as
        # declared in the same file (a field `requests: Family<…, Counter>` or a static).
        for n, thing in re.findall(r'register\(\s*"([a-z_]+)",\s*"[^"]*",\s*([A-Za-z_.]+)\.clone\(\)', code):
            field = thing.split(".")[-1]
            # Its type, not its value: `field: Type<…>,` or `static FIELD: LazyLock<Type> = …`.
            decls = [d for d in re.findall(rf"\b{re.escape(field)}: ([^\n]+)", code) if "::" not in d.split("<")[0]]
            if len(decls) != 1:
                sys.exit(f"check-dashboard: {path}: {len(decls)} declarations of {field} (registered as {n})")
            decl = decls[0]
            kinds[n] = "histogram" if "Histogram" in decl else "counter" if "Counter" in decl else "gauge"
    return names, kinds


def base(name):
    """The name the code registers, from the name a query uses: a counter's samples are
    `<name>_total` (the Prometheus client adds it), a histogram's `<name>_bucket`, `_sum` and
    `_count`. Anything else is used as it is: a counter without `_total` or a gauge with it is a
    name that does not exist."""
    for suffix, kind in [("_total", "counter"), ("_bucket", "histogram"), ("_sum", "histogram"), ("_count", "histogram")]:
        if name.endswith(suffix) and kinds.get(name[: -len(suffix)]) == kind:
            return name[: -len(suffix)]
    if kinds.get(name) in ("counter", "histogram"):
        return f"{name} (a {kinds[name]}: its samples have a suffix)"
    return name


known, kinds = exported(sources())
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
