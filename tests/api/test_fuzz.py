"""Property-based fuzzing of the whole HTTP API from its own OpenAPI description (schemathesis).

The real appliance (MiniLM, Qdrant Edge and DuckDB in a temporary directory, the test catalog
loaded) is served by uvicorn on loopback, as in production, and every operation of the document
it publishes at /schema/openapi.json is called with generated requests, valid and invalid: the
schema's examples, its boundary values (schemathesis' coverage phase) and random ones. Each
answer must not be a 5xx, must have a status the operation declares, the declared content type,
a body that matches the declared schema, and a request that violates the schema must be
refused. Each request has a time limit, so a hang fails the run.

Served over HTTP rather than through schemathesis' ASGI transport: the requests then pass
through uvicorn's parsing, as real ones do, and the HTTP client enforces the time limit.

The run is deterministic (fixed seed, derandomized) and bounded: the number of cases per
operation is capped so that the whole module takes two to three minutes on two busy cores. The
number of cases tried is reported in the session's summary and checked against a lower bound.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.specs.openapi import checks

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from tests.api.conftest import FUZZ_REPORT
from tests.conftest import TEST_CATALOG, Served, free_port, make_settings

ADMIN_KEY = "fuzz-admin-key-5c1d"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
#: A user with feedback, named like the schema's example id, so the user routes find one.
KNOWN_USER = "alice-123"
#: Longest a request may take before the run counts it as a hang.
REQUEST_TIMEOUT = 30.0
#: Cases per operation in the fuzzing phase (the examples and coverage phases add theirs).
MAX_EXAMPLES = 10
#: The fewest cases the whole run with the admin key may have tried.
MIN_CASES = 1000

CHECKS = [
    schemathesis.checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


def published_schema() -> dict[str, Any]:
    """The document the appliance serves at /schema/openapi.json (building it loads nothing)."""
    settings = make_settings(Path("unused"), auth={"admin_keys": [ADMIN_KEY]})
    return create_app(settings).openapi_schema.to_schema()


def fuzz_config(max_examples: int, **project: Any) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 20240611,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
                # The key is the test's to choose: with a key for everything, without for 401s.
                "with-security-parameters": False,
            },
            "cache": {"enabled": False},
            **project,
        }
    )


SPEC = published_schema()
OPERATIONS = sum(len(path) for path in SPEC["paths"].values())
schema = schemathesis.openapi.from_dict(
    SPEC,
    config=fuzz_config(
        MAX_EXAMPLES,
        operations=[
            # Each call re-embeds the whole catalog (seconds on a busy machine) and the operation
            # takes no input, so a few calls cover it; the time goes to the other operations.
            {
                "include-path": "/admin/reindex",
                "generation": {"max-examples": 1},
                "phases": {"coverage": {"enabled": False}},
            }
        ],
    ),
)
unauthenticated = schemathesis.openapi.from_dict(
    SPEC, config=fuzz_config(3, phases={"coverage": {"enabled": False}})
)


class FuzzRun:
    """The served appliance, and what was tried against it."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.started = time.monotonic()
        #: Answer statuses by operation and by whether the admin key was sent.
        self.statuses: dict[str, dict[bool, Counter[int]]] = {}
        self.seconds: Counter[str] = Counter()

    def call(self, case: Case, headers: dict[str, str] | None = None) -> int:
        """Send ``case`` (with ``headers``), run every check on the answer, return its status."""
        sent = time.monotonic()
        response = case.call_and_validate(
            base_url=self.served.url, headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT
        )
        label = case.operation.label
        self.seconds[label] += time.monotonic() - sent
        by_key = self.statuses.setdefault(label, {True: Counter(), False: Counter()})
        by_key[headers is not None][response.status_code] += 1
        return response.status_code

    def cases(self, *, with_key: bool) -> Counter[str]:
        """How many cases each operation was tried with, with the admin key or without a key."""
        return Counter({label: by_key[with_key].total() for label, by_key in self.statuses.items()})

    def report(self) -> str:
        """Cases, answers and time, in total and per operation."""
        keyed, unkeyed = self.cases(with_key=True), self.cases(with_key=False)
        header = (
            f"{keyed.total() + unkeyed.total()} cases ({keyed.total()} with the admin key, "
            f"{unkeyed.total()} without a key) on {len(self.statuses)} operations "
            f"in {time.monotonic() - self.started:.0f} s"
        )
        lines = [header]
        for label, by_key in self.statuses.items():
            answers = " | ".join(
                " ".join(f"{status}x{n}" for status, n in sorted(by_key[k].items()))
                for k in (True, False)
            )
            lines.append(
                f"  {label}: {by_key[True].total()} + {by_key[False].total()} cases, "
                f"{self.seconds[label]:.1f} s: {answers}"
            )
        return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz(
    minilm: Embedder, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[FuzzRun]:
    """The appliance on loopback with the test catalog and one user, shared by the module.

    At the end, the number of cases tried is reported (see ``tests/api/conftest.py``) and
    checked against a lower bound.
    """
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    settings = make_settings(data_dir, auth={"admin_keys": [ADMIN_KEY]})
    served = Served(create_app(settings, backends=Backends(embedder=minilm)), free_port())
    served.start()
    try:
        with httpx.Client(base_url=served.url, headers=ADMIN, timeout=60) as http:
            assert http.get("/schema/openapi.json").json() == SPEC
            items = [json.loads(line) for line in TEST_CATALOG.read_text().splitlines() if line]
            assert http.post("/items", json={"items": items}).status_code == 200
            event = {"user_id": KNOWN_USER, "item_id": "tt-1", "interaction_type": "like"}
            assert http.post("/feedback", json=event).status_code == 200
        run = FuzzRun(served)
        yield run
    finally:
        served.stop()
    request.config.stash[FUZZ_REPORT] = run.report()
    selected = Counter(getattr(item, "originalname", "") for item in request.session.items)
    if (
        selected[test_fuzz_with_an_admin_key.__name__]
        + selected[test_fuzz_deletions_with_an_admin_key.__name__]
        == OPERATIONS
    ):  # every operation was selected, not a few with -k
        keyed = run.cases(with_key=True)
        assert len(keyed) == OPERATIONS, run.report()
        assert all(keyed.values()), run.report()
        assert keyed.total() >= MIN_CASES, run.report()


# The destructive operations (DELETE an item or a user) run after the others, in their own
# test, so that the item and user they may delete (ids seen in earlier answers are reused) are
# gone only once everything else has been tried on them.
@schema.exclude(method="DELETE").parametrize()
def test_fuzz_with_an_admin_key(case: Case, fuzz: FuzzRun) -> None:
    fuzz.call(case, ADMIN)


@schema.include(method="DELETE").parametrize()
def test_fuzz_deletions_with_an_admin_key(case: Case, fuzz: FuzzRun) -> None:
    fuzz.call(case, ADMIN)


@unauthenticated.parametrize()
def test_without_a_key_only_health_answers(case: Case, fuzz: FuzzRun) -> None:
    status = fuzz.call(case)
    if case.operation.label == "GET /health":
        assert status == 200
    else:
        assert status == 401
