"""Schemathesis against the live app's OpenAPI document: no 5xx, and answers that conform to the document.

The app runs on 127.0.0.1 (ephemeral port) over the simulated park; every
operation of the document gets a bounded, seeded batch of generated requests
(valid and invalid data, and valid data naming a stored enterprise or
instruction), with an admin token and with a grid token where the operation
admits the role. Schemathesis is synchronous (requests), so it runs in a
worker thread while the server answers on the test's event loop.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.vpp.api.security_support import make_callers, start_client
from vpp.api.app import ROUTES
from vpp.model import DispatchInstruction, Role

ROLES = {(r.method, r.path): r.roles for r in ROUTES}

MAX_EXAMPLES = 25
"""Generated requests per operation and token [-]."""

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]  # fmt: skip


def run_operation(strategy, base_url: str, headers: dict[str, str]) -> int:
    """Send one operation's seeded batch of generated requests; returns how many were sent. Raises on a failed check."""
    sent = 0

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @hypothesis.given(case=strategy)
    def call(case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    call()
    return sent


def cases(operation, known: dict[str, str]):
    """Valid and invalid requests, and valid ones naming things that exist (an enterprise, an instruction)."""
    choices = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    names = {p.name for p in operation.path_parameters}
    if names:
        choices.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={n: known[n] for n in names}))
    return st.one_of(choices)


def callers_of(operation, tokens: dict[str, str]) -> dict[str, str]:
    """The tokens whose role the operation admits (the admin's alone for a public one).

    Refusals of the other roles are the role table's business (test_role_table.py);
    generating hundreds of requests only to be told 403 would spend the time budget on nothing.
    """
    roles = ROLES[(operation.method.upper(), operation.path)]
    if roles is None:
        return {"admin": tokens["admin"]}
    return {who: secret for who, secret in tokens.items() if Role(who) in roles}


def run_schemathesis(base_url: str, tokens: dict[str, str], known: dict[str, str]) -> tuple[int, list[str]]:
    """Every operation with every token; returns the number of requests sent and one line per failing operation.

    ``known``: a value of each path parameter that names something stored.
    """
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json", config=schemathesis.Config())
    sent = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = cases(operation, known)
        for who, secret in callers_of(operation, tokens).items():
            try:
                sent += run_operation(strategy, base_url, {"Authorization": f"Bearer {secret}"})
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every failing operation reported together
                failures.append(f"{operation.label} as {who}: {type(exc).__name__}: {str(exc)[:1500]}")
    return sent, failures


async def test_the_whole_api_survives_schemathesis_without_5xx_or_schema_mismatch(plant):
    callers = await make_callers(plant)
    client = await start_client(plant)
    try:
        base_url = str(client.make_url("")).rstrip("/")
        tokens = {"admin": callers.secrets["admin"], "grid": callers.secrets["grid"]}
        start = plant.clock.now()
        await plant.service.submit_instruction(DispatchInstruction(
            id="fuzz-1", kind="delta", start=start, end=start + timedelta(minutes=15), delta_kw=10.0,
        ))  # fmt: skip
        known = {"enterprise_id": callers.own_enterprise, "instruction_id": "fuzz-1"}
        sent, failures = await asyncio.to_thread(run_schemathesis, base_url, tokens, known)
        assert not failures, "\n\n".join(failures)
        assert sent >= MAX_EXAMPLES * len(ROUTES) // 2  # it really ran
    finally:
        await client.close()
