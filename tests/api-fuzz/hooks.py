"""Checks of our own that schemathesis runs on every answer (tests/tests/api_fuzz.rs loads this
module through SCHEMATHESIS_HOOKS), besides its built-in ones:

- every error is an RFC 9457 problem: `application/problem+json` with `type`, `title` and `status`
  (the status of the answer itself), but for the health report's 503;
- no answer carries another's data: none of the ids in FOREIGN_IDS appears in any body but the
  public catalog's (which lists every organizer's published events) (for the
  core, every id of the other organization: its venue, event, tiers, promo code, paid order, ticket,
  transfer, admin and API key; for the edge, another buyer's hold).
"""

import atexit
import collections
import json
import os

import schemathesis

FOREIGN = [i for i in os.environ.get("FOREIGN_IDS", "").split(",") if i]


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
    if case.path.startswith("/api/v1/catalog/"):
        return None
    text = response.text or ""
    for foreign in FOREIGN:
        assert foreign not in text, f"the answer holds another organization's id {foreign}"
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
