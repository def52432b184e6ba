"""Every API operation fuzzed with schemathesis against the real application (issue 10, point 10).

The application runs on a real socket (`web.AppRunner`, its own event loop in a thread) over this
run's PostgreSQL and Redis. For each operation of `openapi.json`, Hypothesis draws cases from the
document (valid ones and, where the document allows it, invalid ones: wrong types, missing
fields, out-of-range values), with a fixed seed (`derandomize`) and a bounded number per
operation, and sends them as two callers: anonymously, and as the owner of an organization with
members, teams, a pending invitation, a member removed for 2FA, a webhook and an enforcement run
(a bearer token). Most cases have their path parameters replaced with ids that exist (the
organization, its members, the webhook, the run, the invitation's own link), so that the
answers are not all 404s.

Each answer must be no 5xx, a status the document lists for the operation, of a documented
content type, with a body that fits its schema and the headers it promises (`Link`,
`Retry-After`); an invalid case must not be answered 2xx (what the document calls invalid, the
code refuses). Every case that breaks one is collected, and the operation's test fails listing
them all. The totals (cases per caller, 5xx, schema violations, seconds) are printed at the end
of the run (`tests/security/totals.py`). The module's tests run in one process (its
`xdist_group`): the last one checks what all of them sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.openapi import build
from db import members, organizations, users
from require2fa.security import new_token, token_hash
from require2fa.settings import Settings
from tests.conftest import NAMESPACE
from tests.factories import password_hash

pytestmark = pytest.mark.xdist_group("api-fuzz")
SCHEMA = schemathesis.openapi.from_dict(build())
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
CALLERS = ("anonymous", "owner")
# Cases per operation, per caller and kind (valid, invalid): 2 x 2 x 50 operations x 6 is over
# a thousand, fewer where the document leaves less to vary (an operation without input has one).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))  # more for a longer search by hand
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    # An invalid case (against the document's request schema) must not be answered 2xx: the
    # documented parameters and bodies are the ones the code accepts.
    negative_data_rejection,
]

# Filled as the tests run; `totals.pytest_terminal_summary` prints them.
TOTALS: Counter[str] = Counter()


# --- The application on a real socket -------------------------------------------------------


@pytest.fixture(scope="module")
def base_url(database: str, redis_url: str, smtp_server: Any) -> Iterator[str]:
    """The application served on 127.0.0.1 from a thread of its own (the tests call it with
    blocking requests)."""
    app_settings = Settings(
        environment="development",
        database_url=database,
        redis_url=redis_url,
        redis_namespace=NAMESPACE,
        smtp_url=f"smtp://127.0.0.1:{smtp_server[0].port}",
        base_url="http://testserver",
    )
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(app_settings), access_log=None)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="api-fuzz-server", daemon=True)
    thread.start()
    assert ready.wait(30), "the application did not start"
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


# --- The organization the owner fuzzes ------------------------------------------------------


@dataclass
class World:
    token: str = ""
    ids: dict[str, list[str]] = field(default_factory=dict)  # path parameter -> real values

    def headers(self, caller: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if caller == "owner" else {}


async def _user(conn: asyncpg.Connection, email: str, *, has2fa: bool) -> asyncpg.Record:
    user = await users.create(
        conn, email=email, name=email.split("@")[0], password_hash=password_hash()
    )
    assert user is not None
    if has2fa:
        await conn.execute(
            """insert into authenticators (user_id, type, name, secret_encrypted, confirmed_at)
               values ($1, 'totp', 'app', 'x', now())""",
            user["id"],
        )
    return user


async def _member(conn: asyncpg.Connection, org_id: int, user: asyncpg.Record, role: str) -> int:
    return await members.insert_active(
        conn, organization_id=org_id, user_id=user["id"], email=user["email"], role=role
    )


@pytest.fixture
async def world(pool: asyncpg.Pool, base_url: str) -> World:
    """Organization `alpha` (its owner has a token and a second factor) with an admin, a
    member without 2FA, a team, a pending invitation, a member removed for 2FA, a webhook with
    deliveries and a finished run; `beta`, another owner's, whose ids are asked for through
    alpha's URLs too. Tables are emptied after each test (`_clean_tables`)."""
    world = World(token=new_token())
    invite_token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        owner = await _user(conn, "owner@alpha.example", has2fa=True)
        await users.create_token(conn, user_id=owner["id"], token_hash=token_hash(world.token))
        spare_token = await users.create_token(
            conn, user_id=owner["id"], token_hash=token_hash(new_token()), name="spare"
        )
        alpha = await organizations.create(conn, slug="alpha", name="Alpha")
        beta = await organizations.create(conn, slug="beta", name="Beta")
        owner_member = await _member(conn, alpha["id"], owner, "owner")
        admin = await _member(
            conn, alpha["id"], await _user(conn, "admin@alpha.example", has2fa=True), "admin"
        )
        no2fa = await _member(
            conn, alpha["id"], await _user(conn, "no2fa@alpha.example", has2fa=False), "member"
        )
        removed_user = await _user(conn, "removed@alpha.example", has2fa=False)
        removed = await _member(conn, alpha["id"], removed_user, "member")
        await conn.execute(
            """update members set user_id = null, removed_user_id = user_id,
                      pending_reason = '2fa', token_hash = $2, removed_at = now(),
                      reinstate_by = now() + interval '90 days'
               where id = $1""",
            removed,
            token_hash(new_token()),
        )
        invited = await members.insert_pending(
            conn,
            organization_id=alpha["id"],
            email="invited@alpha.example",
            role="member",
            token_hash=token_hash(invite_token),
            invited_by=owner["id"],
        )
        other = await _user(conn, "owner@beta.example", has2fa=True)
        await _member(conn, beta["id"], other, "owner")
        beta_member = await _member(
            conn, beta["id"], await _user(conn, "member@beta.example", has2fa=True), "member"
        )
        await organizations.create_team(conn, organization_id=alpha["id"], slug="ops", name="Ops")
        run = await conn.fetchval(
            """insert into enforcement_runs (organization_id, status, finished_at)
               values ($1, 'completed', now()) returning id""",
            alpha["id"],
        )
        factors = await conn.fetch("select id from authenticators where user_id = $1", owner["id"])
    # The webhook through the API, so that its creation is audited and delivered.
    hook = _post(
        base_url,
        "/api/0/organizations/alpha/webhooks/",
        {"url": "https://hooks.example.com/r2fa", "events": ["*"]},
        world,
    )
    async with pool.acquire() as conn:  # the delivery of its own creation
        delivery = await conn.fetchval(
            "select min(id) from webhook_deliveries where webhook_id = $1", int(hook["id"])
        )
    _post(base_url, "/api/0/organizations/alpha/members/", {"email": "new@alpha.example"}, world)
    world.ids = {
        "org": ["alpha", "alpha", "alpha", "beta"],
        "member_id": [str(i) for i in (admin, no2fa, invited, removed, owner_member, beta_member)],
        "webhook_id": [hook["id"]],
        "delivery_id": [str(delivery)],
        "enforcement_id": [str(run)],
        "id": [str(spare_token), *(str(row["id"]) for row in factors)],
        "token": [invite_token],
    }
    world.ids["member_id"].append(str(invited))  # the invitation's own link: id and token
    return world


def _post(base_url: str, path: str, body: dict[str, Any], world: World) -> dict[str, Any]:
    response = requests.post(base_url + path, json=body, headers=world.headers("owner"), timeout=30)
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- The fuzzing --------------------------------------------------------------------------


def _strategies(label: str) -> list[st.SearchStrategy[Any]]:
    operation = OPERATIONS[label]
    return [
        operation.as_strategy(generation_mode=mode)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]


def _with_real_ids(case: Any, data: st.DataObject, world: World) -> None:
    """Replaces path parameters, most of the time, with ones that exist (the generated value
    stays one of the choices)."""
    if not case.path_parameters:
        return
    replaced = dict(case.path_parameters)
    for name, generated in replaced.items():
        real = world.ids.get(name)
        if real:
            replaced[name] = data.draw(st.sampled_from([*real, generated]), label=name)
    case.path_parameters = replaced


def _fuzz(label: str, caller: str, world: World, base_url: str) -> list[str]:
    """Sends the operation's cases as `caller`; the failures, one line each."""
    failures: list[str] = []
    session = requests.Session()
    for strategy in _strategies(label):

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy, data=st.data())
        def send(case: Any, data: st.DataObject) -> None:
            _with_real_ids(case, data, world)
            session.cookies.clear()  # each case on its own, as the caller
            response = case.call(base_url=base_url, session=session, headers=world.headers(caller))
            TOTALS["cases"] += 1
            TOTALS[f"cases as {caller}"] += 1
            TOTALS[f"{response.status_code // 100}xx as {caller}"] += 1
            TOTALS[f"{case.method} {case.path} {caller} {response.status_code}"] += 1
            if response.status_code >= 500:
                TOTALS["5xx"] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as failure:  # every check that failed
                if response.status_code < 500:
                    TOTALS["schema violations"] += 1
                failures.append(
                    f"{case.method} {case.formatted_path} as {caller} -> "
                    f"{response.status_code}: {str(failure).strip()[:1500]}"
                )

        # Unsatisfiable: nothing in the document to make invalid (an operation without input).
        with contextlib.suppress(Unsatisfiable):
            send()
    return failures


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_operation_answers_as_documented(label: str, world: World, base_url: str) -> None:
    started = time.monotonic()
    # Anonymous first: nothing it sends can change the owner's organization.
    failures = [failure for caller in CALLERS for failure in _fuzz(label, caller, world, base_url)]
    TOTALS["seconds"] += time.monotonic() - started
    TOTALS["operations"] += 1
    assert not failures, f"{len(failures)} cases of {label}:\n" + "\n\n".join(failures)


def test_at_least_a_thousand_cases() -> None:
    """After every operation above ran (a whole run of this module), the cases sent add up."""
    if TOTALS["operations"] < len(OPERATIONS):
        pytest.skip("only part of the operations ran")
    assert TOTALS["cases"] >= 1000, TOTALS["cases"]
    assert TOTALS["5xx"] == 0 and TOTALS["schema violations"] == 0
