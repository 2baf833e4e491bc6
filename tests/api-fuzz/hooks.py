"""Checks of our own that schemathesis runs on every answer (tests/tests/api_fuzz.rs loads this
module through SCHEMATHESIS_HOOKS), besides its built-in ones:

- every error is an RFC 9457 problem: `application/problem+json` with `type`, `title` and `status`
  (the status of the answer itself), but for the health report's 503;
- no answer carries another's data: nothing in FOREIGN_IDS appears in any body (for the core, the
  other organization's ids, its buyers' addresses, their tokens, its event's title and venue's
  name, of which the public catalog may show those in FOREIGN_PUBLIC; for the edge, another buyer's
  hold and its token).
"""

import atexit
import collections
import json
import os

import schemathesis

FOREIGN = [i for i in os.environ.get("FOREIGN_IDS", "").split(",") if i]
# Of those, what the core's public catalog shows of a published event (its id, its tiers', its title,
# its venue's name): the catalog may show them, nothing else may.
PUBLIC = {i for i in os.environ.get("FOREIGN_PUBLIC", "").split(",") if i}
# Of those, the names (not the ids) the fuzzer itself has sent (it reuses what the public catalog
# showed it, as anyone may): an answer showing the caller's own input (an event it named
# "rival night") leaks nothing. An id is excused only in the answer to the request that sent it.
ECHOED = set()


def _sent(case):
    return json.dumps([case.body, case.path_parameters, case.query, case.headers], default=str)


def _is_id(value):
    return len(value) == 36 and value.count("-") == 4


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    sent = _sent(case)
    ECHOED.update(p for p in PUBLIC if not _is_id(p) and p in sent)


@schemathesis.check
def errors_are_problem_json(ctx, response, case):
    if response.status_code < 400:
        return None
    # The health chain's 503 is its report (which tier is down), as documented, not a problem.
    if case.path in ("/healthz", "/readyz") and response.status_code == 503:
        return None
    types = response.headers.get("content-type") or [""]
    assert types[0].startswith("application/problem+json"), (
        f"a {response.status_code} answered {types[0]!r}, not application/problem+json"
    )
    body = response.json()
    for field in ("type", "title", "status"):
        assert field in body, f"the problem has no {field!r}: {body}"
    assert body["status"] == response.status_code, f"the problem says {body['status']}, the answer {response.status_code}"
    return None


@schemathesis.check
def no_other_tenants_data(ctx, response, case):
    # The core's public catalog lists what every organizer published, the other's too.
    public = case.path.startswith("/api/v1/catalog/")
    text = response.text or ""
    sent = _sent(case)
    for foreign in FOREIGN:
        if (public and foreign in PUBLIC) or foreign in ECHOED or (foreign in PUBLIC and foreign in sent):
            continue
        assert foreign not in text, f"the answer holds another's {foreign!r}"
    return None


# The statuses each operation answered (API_FUZZ_STATUSES: a file the test reads afterwards).
STATUSES = collections.defaultdict(collections.Counter)


@schemathesis.hook
def after_call(ctx, case, response):
    STATUSES[case.operation.definition.raw.get("operationId") or case.path][str(response.status_code)] += 1


def _write_statuses():
    path = os.environ.get("API_FUZZ_STATUSES")
    if path:
        with open(path, "w") as f:
            json.dump(STATUSES, f)


atexit.register(_write_statuses)
