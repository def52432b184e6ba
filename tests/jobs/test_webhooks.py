"""Webhook deliveries against a real receiver (an aiohttp server on loopback), PostgreSQL and
Redis: the trigger that writes them, `jobs.webhooks.dispatch` that posts them, and real
workers (threads here, a `dramatiq jobs` process killed mid-send at the bottom)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from db import audit
from db.audit import Actor
from jobs import webhooks as webhook_jobs
from require2fa import webhooks
from require2fa.settings import Settings
from tests.factories import add_member, create_org, create_user, owner_and_org
from tests.webhook_receiver import Answer, Receiver

ACTOR = Actor(label="tests")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def org(pool: asyncpg.Pool) -> asyncpg.Record:
    owner = await create_user(pool, "owner@acme.test", has2fa=True)
    return await create_org(pool, "acme", owner["id"])


async def subscribe(
    pool: asyncpg.Pool,
    settings: Settings,
    org_id: int,
    url: str,
    events: list[str] | None = None,
) -> webhooks.Created:
    async with pool.acquire() as conn, conn.transaction():
        return await webhooks.create(
            conn,
            organization_id=org_id,
            url=url,
            events=events or ["*"],
            actor=ACTOR,
            settings=settings,
        )


async def record(pool: asyncpg.Pool, org_id: int, count: int, event: str = "member.edit") -> None:
    async with pool.acquire() as conn, conn.transaction():
        for n in range(count):
            await audit.record(
                conn, organization_id=org_id, event=event, actor=ACTOR, data={"n": n}
            )


async def deliveries(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("select * from webhook_deliveries order by id")


async def time_passes(pool: asyncpg.Pool) -> None:
    """Every retry comes due now, as if its backoff had elapsed."""
    async with pool.acquire() as conn:
        await conn.execute(
            "update webhook_deliveries set next_attempt_at = now() where status = 'queued'"
        )


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.05)


# --- Writing deliveries -----------------------------------------------------------------------


async def test_each_audit_event_becomes_one_delivery_per_matching_webhook(
    pool, settings, org
) -> None:
    every = await subscribe(pool, settings, org["id"], "http://127.0.0.1:9/all")
    pending = await subscribe(pool, settings, org["id"], "http://127.0.0.1:9/p", ["member.pending"])
    other_owner, other = await owner_and_org(pool, "other", "owner@other.test", has2fa=True)
    await subscribe(pool, settings, other["id"], "http://127.0.0.1:9/other")

    await record(pool, org["id"], 3, "member.edit")
    await record(pool, org["id"], 2, "member.pending")

    rows = await deliveries(pool)
    mine = [(r["webhook_id"], r["event"]) for r in rows if r["webhook_id"] != 3]
    hook_all, hook_pending = every.webhook["id"], pending.webhook["id"]
    # webhook.create of the second webhook reaches the first; each event once per match.
    assert mine == (
        [(hook_all, "webhook.create")]
        + [(hook_all, "webhook.create")]
        + [(hook_all, "member.edit")] * 3
        + [(hook_all, "member.pending"), (hook_pending, "member.pending")] * 2
    )
    assert [r["event"] for r in rows if r["webhook_id"] == 3] == ["webhook.create"]
    assert all(r["status"] == "queued" and r["attempts"] == 0 for r in rows)


async def test_an_event_rolled_back_has_no_delivery(pool, settings, org) -> None:
    await subscribe(pool, settings, org["id"], "http://127.0.0.1:9/")
    before = len(await deliveries(pool))
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await audit.record(conn, organization_id=org["id"], event="member.edit", actor=ACTOR)
        await transaction.rollback()
    assert len(await deliveries(pool)) == before


async def test_an_enforcement_batch_writes_a_delivery_per_removal_in_its_statement(
    pool, settings, org
) -> None:
    from jobs.enforcement import coordinate_run, remove_batch_now
    from require2fa import organization_settings

    hook = await subscribe(pool, settings, org["id"], "http://127.0.0.1:9/", ["member.pending"])
    owner_id = org_owner = None
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval(
            "select user_id from members where organization_id = $1", org["id"]
        )
        org_owner = await conn.fetchrow("select * from users where id = $1", owner_id)
    for n in range(30):
        user = await create_user(pool, f"m{n}@acme.test", has2fa=n % 3 == 0)
        await add_member(pool, org["id"], user)
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org["id"],
            actor=Actor(user_id=owner_id, label=org_owner["email"]),
            role="owner",
        )
    sent: list[tuple[int, int]] = []
    await coordinate_run(
        pool, change.run["id"], batch_size=8, send=lambda r, b: sent.append((r, b))
    )
    for run_id, batch_no in sent:
        await remove_batch_now(pool, settings, run_id, batch_no)

    async with pool.acquire() as conn:
        pending = await conn.fetch(
            "select id from audit_log where event = 'member.pending' order by id"
        )
        rows = await conn.fetch(
            "select audit_log_id from webhook_deliveries where webhook_id = $1 order by id",
            hook.webhook["id"],
        )
    assert len(pending) == 20
    assert [r["audit_log_id"] for r in rows] == [r["id"] for r in pending]


# --- Posting them -----------------------------------------------------------------------------


async def test_each_delivery_is_posted_once_signed_with_the_secret(
    pool, settings, org, receiver
) -> None:
    hook = await subscribe(pool, settings, org["id"], receiver.url)
    await record(pool, org["id"], 5)

    report = await webhook_jobs.dispatch(pool, settings)

    assert report.delivered == 6 and report.retried == report.failed == 0
    rows = await deliveries(pool)
    assert receiver.by_delivery() == {str(r["id"]): 1 for r in rows}
    for received in receiver.requests:
        # What a receiver does: the HMAC-SHA256 of the raw body under the secret it was given.
        signed = received.headers["X-Require2FA-Signature"]
        for secret, valid in ((hook.secret, True), ("whsec_wrong", False)):
            mac = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(signed, f"sha256={mac}") is valid
        assert received.headers["Content-Type"] == "application/json"
        assert received.path == "/hook"
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert [b["event"] for b in bodies] == ["webhook.create"] + ["member.edit"] * 5
    assert [h for h in receiver.events()] == [b["event"] for b in bodies]
    assert set(bodies[1]) == {
        "id",
        "event",
        "organization",
        "actor",
        "targetUser",
        "targetMember",
        "data",
        "dateCreated",
    }
    assert bodies[1]["organization"] == {"id": str(org["id"]), "slug": "acme"}
    assert bodies[1]["data"] == {"n": 0}
    assert bodies[0]["data"]["host"] == urlsplit(receiver.url).netloc  # the host only
    assert all(r["status"] == "delivered" and r["attempts"] == 1 for r in rows)
    assert all(r["last_status"] == 200 and r["last_body"] == "ok" for r in rows)

    # A second dispatch finds nothing due and sends nothing.
    again = await webhook_jobs.dispatch(pool, settings)
    assert again.delivered == 0 and len(receiver.requests) == 6


async def test_the_body_matches_the_audit_log_api(pool, settings, org, receiver, client) -> None:
    from tests.factories import token_for

    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    member = await create_user(pool, "ada@acme.test")
    member_id = await add_member(pool, org["id"], member)
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval(
            "select user_id from members where organization_id = $1 and role = 'owner'", org["id"]
        )
        await audit.record(
            conn,
            organization_id=org["id"],
            event="member.edit",
            actor=Actor(user_id=owner_id, label="owner@acme.test", ip_address="10.1.2.3"),
            target_member_id=member_id,
            target_user_id=member["id"],
            data={"email": "ada@acme.test", "role": "to admin"},
        )
    await webhook_jobs.dispatch(pool, settings)
    sent = json.loads(receiver.requests[-1].body)

    answer = await client.get(
        "/api/0/organizations/acme/audit-logs/?event=member.edit",
        headers=await token_for(pool, owner_id),
    )
    entry = (await answer.json())["rows"][0]
    for key in ("id", "event", "actor", "targetUser", "targetMember", "data", "dateCreated"):
        assert sent[key] == entry[key], key
    assert "ipAddress" not in sent


async def test_a_500_then_a_200_delivers_once_with_the_same_id(
    pool, settings, org, receiver
) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 1)
    receiver.answers.append(Answer(500, "database is down"))

    first = await webhook_jobs.dispatch(pool, settings)
    (row,) = await deliveries(pool)
    assert first.retried == 1
    assert row["status"] == "queued" and row["attempts"] == 1
    assert (row["last_status"], row["last_body"], row["last_error"]) == (
        500,
        "database is down",
        "HTTP 500",
    )
    assert row["next_attempt_at"] > row["created_at"] + timedelta(seconds=5)

    await time_passes(pool)
    second = await webhook_jobs.dispatch(pool, settings)
    (row,) = await deliveries(pool)
    assert second.delivered == 1
    assert row["status"] == "delivered" and row["attempts"] == 2 and row["last_status"] == 200
    assert receiver.by_delivery() == {str(row["id"]): 2}
    assert receiver.requests[0].body == receiver.requests[1].body


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_a_4xx_fails_at_once(pool, settings, org, receiver, status) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 1)
    receiver.default = Answer(status, "no such hook " + "x" * 5000)

    report = await webhook_jobs.dispatch(pool, settings)
    await time_passes(pool)
    await webhook_jobs.dispatch(pool, settings)

    (row,) = await deliveries(pool)
    assert report.failed == 1
    assert row["status"] == "failed" and row["attempts"] == 1 and row["last_status"] == status
    assert row["last_body"].startswith("no such hook ") and len(row["last_body"]) == 1024
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [408, 429, 502, 503])
async def test_408_429_and_5xx_are_retried(pool, settings, org, receiver, status) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 1)
    receiver.answers.append(Answer(status, "later", {"Retry-After": "120"}))

    await webhook_jobs.dispatch(pool, settings)
    (row,) = await deliveries(pool)
    assert row["status"] == "queued" and row["last_status"] == status
    if status == 429:  # the receiver's pause is honoured
        assert row["next_attempt_at"] >= row["created_at"] + timedelta(seconds=119)
    await time_passes(pool)
    await webhook_jobs.dispatch(pool, settings)
    (row,) = await deliveries(pool)
    assert row["status"] == "delivered" and row["attempts"] == 2


async def test_a_redirect_is_not_followed(pool, settings, org, receiver) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 1)
    receiver.default = Answer(307, "", {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"})

    await webhook_jobs.dispatch(pool, settings)

    (row,) = await deliveries(pool)
    assert row["status"] == "failed" and row["last_status"] == 307
    assert "redirects are not followed" in row["last_error"]
    assert [r.path for r in receiver.requests] == ["/hook"]


async def test_the_receiver_down_for_a_while_then_back(pool, settings, org, receiver) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await receiver.stop()
    await record(pool, org["id"], 40)

    down = await webhook_jobs.dispatch(pool, settings)
    rows = await deliveries(pool)
    assert down.retried == 40 and down.delivered == 0
    assert all(r["status"] == "queued" and r["attempts"] == 1 for r in rows)
    assert all(r["last_status"] is None and r["last_error"] for r in rows)

    await time_passes(pool)  # still down: another round of retries, no loss
    await webhook_jobs.dispatch(pool, settings)

    await receiver.start()
    await time_passes(pool)
    back = await webhook_jobs.dispatch(pool, settings)
    rows = await deliveries(pool)
    assert back.delivered == 40
    assert all(r["status"] == "delivered" and r["attempts"] == 3 for r in rows)
    assert receiver.by_delivery() == {str(r["id"]): 1 for r in rows}


async def test_a_slow_receiver_holds_a_request_for_the_timeout_only(
    pool, settings, org, receiver
) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 3)
    receiver.default = Answer(200, "ok", pause=30)

    session = webhook_jobs.client_session(settings, timeout=0.5)
    try:
        report = await asyncio.wait_for(webhook_jobs.dispatch(pool, settings, session=session), 10)
    finally:
        await session.close()

    assert report.retried == 3
    rows = await deliveries(pool)
    assert all(
        r["status"] == "queued" and "no answer within 0.5 s" in r["last_error"] for r in rows
    )


async def test_retries_stop_after_a_day(pool, settings, org, receiver) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 1)
    receiver.default = Answer(503, "maintenance")
    async with pool.acquire() as conn:
        await conn.execute("update webhook_deliveries set created_at = now() - interval '25 hours'")

    await webhook_jobs.dispatch(pool, settings)

    (row,) = await deliveries(pool)
    assert row["status"] == "failed"
    assert row["last_error"] == "gave up after 1 attempts: HTTP 503"


async def test_rows_claimed_by_a_dead_worker_go_out_again_with_their_ids(
    pool, settings, org, receiver
) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 4)
    async with pool.acquire() as conn:
        from db import webhooks as rows_db

        claimed = await rows_db.claim(conn, limit=10, lease=timedelta(minutes=5), per_webhook=10)
        assert len(claimed) == 4
        # The claiming worker died; its claim lapses.
        await conn.execute("update webhook_deliveries set claimed_until = now() - interval '1 s'")
        # A late record from that claim (same attempts) changes nothing once it is put back.
    released, due = await webhook_jobs.sweep(pool)
    assert released == 4 and due
    async with pool.acquire() as conn:
        assert await rows_db.mark_delivered(conn, [(claimed[0]["id"], 1, 200, "late")]) == 0

    await webhook_jobs.dispatch(pool, settings)
    rows = await deliveries(pool)
    assert all(r["status"] == "delivered" and r["attempts"] == 2 for r in rows)
    assert receiver.by_delivery() == {str(r["id"]): 1 for r in rows}


async def test_concurrent_dispatchers_never_share_a_row(pool, settings, org, receiver) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 300)

    reports = await asyncio.gather(
        *(webhook_jobs.dispatch(pool, settings, batch=20, concurrency=4) for _ in range(3))
    )

    assert sum(r.delivered for r in reports) == 300
    assert set(receiver.by_delivery().values()) == {1}


async def test_a_secret_under_another_secret_key_fails_without_sending(
    pool, settings, org, receiver
) -> None:
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 1)
    rotated = settings.replace(secret_key="another-secret-key-of-enough-length")

    await webhook_jobs.dispatch(pool, rotated)

    (row,) = await deliveries(pool)
    assert row["status"] == "failed" and "cannot be decrypted" in row["last_error"]
    assert receiver.requests == []


# --- Outside development: no private addresses ------------------------------------------------


@pytest.fixture
def production(settings: Settings) -> Settings:
    return settings.replace(environment="production", secret_key="s" * 40)


async def test_private_addresses_are_refused_at_delivery_outside_development(
    pool, settings, production, org, receiver
) -> None:
    """Rows that name a loopback address (written before the rules, or a name that resolved
    to a public address at creation and rebinds later): refused at the connection, nothing
    reaches the receiver."""
    urls = [
        f"https://127.0.0.1:{receiver.port}/hook",
        f"https://localhost:{receiver.port}/hook",
        f"https://[::ffff:127.0.0.1]:{receiver.port}/hook",
        f"http://127.0.0.1:{receiver.port}/hook",  # and not https either
    ]
    async with pool.acquire() as conn:
        for url in urls:
            await conn.execute(
                """insert into webhooks (organization_id, url, events, secret_encrypted)
                   values ($1, $2, '{member.edit}', $3)""",
                org["id"],
                url,
                webhooks.encrypt_secret("whsec_x", production.secret_key),
            )
    await record(pool, org["id"], 1)

    report = await webhook_jobs.dispatch(pool, production)

    rows = await deliveries(pool)
    assert report.failed == 4 and report.retried == 0
    assert all(r["status"] == "failed" and r["last_error"].startswith("refused") for r in rows)
    errors = {r["webhook_id"]: r["last_error"] for r in rows}
    assert "private, loopback or link-local" in errors[1] and errors[1] == errors[3]
    assert "not allowed: localhost resolves to 127.0.0.1" in errors[2]  # at the connection
    assert "https://" in errors[4]
    assert receiver.requests == []


class _Rebinding(AbstractResolver):
    """A DNS answer that says the name is public while the address is loopback (what a
    rebinding attacker's server can do between our check and our connection)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


async def test_the_address_actually_connected_to_is_checked(
    pool, production, org, receiver
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into webhooks (organization_id, url, events, secret_encrypted)
               values ($1, $2, '{member.edit}', $3)""",
            org["id"],
            f"https://hooks.example.com:{receiver.port}/hook",
            webhooks.encrypt_secret("whsec_x", production.secret_key),
        )
    await record(pool, org["id"], 1)
    session = webhook_jobs.client_session(production, resolver=_Rebinding())
    try:
        await webhook_jobs.dispatch(pool, production, session=session)
    finally:
        await session.close()

    (row,) = await deliveries(pool)
    assert row["status"] == "failed" and "not allowed: 127.0.0.1" in row["last_error"]
    assert receiver.requests == []


# --- End to end: real workers -----------------------------------------------------------------


@pytest.mark.e2e
async def test_e2e_the_trigger_wakes_the_workers(
    pool, settings, org, receiver, start_worker
) -> None:
    start_worker("webhooks")
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    await record(pool, org["id"], 10)  # nobody kicks: the trigger's notification does

    async def all_delivered() -> bool:
        rows = await deliveries(pool)
        return len(rows) == 10 and all(r["status"] == "delivered" for r in rows)

    await until(all_delivered, "every delivery delivered")
    assert receiver.by_delivery() == {str(r["id"]): 1 for r in await deliveries(pool)}


def spawn_worker() -> subprocess.Popen[bytes]:
    """`dramatiq jobs` on the webhooks queue, in its own process group, with this run's env."""
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1", "--threads", "2"]
        + ["--queues", "webhooks"],
        env=os.environ.copy(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_e2e_a_worker_killed_mid_send(pool, settings, org, receiver, broker) -> None:
    """SIGKILL of the worker process while requests are in flight: after its lease lapses the
    sweeper sends what it held again. Every event arrives; an event that arrives twice does
    so with the same delivery id and body (the documented duplicate), never as two."""
    await subscribe(pool, settings, org["id"], receiver.url, ["member.edit"])
    receiver.default = Answer(200, "ok", pause=0.05)
    await record(pool, org["id"], 300)
    process = spawn_worker()
    try:
        await receiver.wait_for(60, limit=60)  # the worker is sending
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    rows = await deliveries(pool)
    assert any(r["status"] != "delivered" for r in rows)  # it died before the end
    async with pool.acquire() as conn:  # its lease runs out
        await conn.execute(
            "update webhook_deliveries set claimed_until = now() - interval '1 s' "
            "where status = 'sending'"
        )
    receiver.default = Answer()
    released, _due = await webhook_jobs.sweep(pool)
    await webhook_jobs.dispatch(pool, settings)

    rows = await deliveries(pool)
    assert all(r["status"] == "delivered" for r in rows)
    received = receiver.by_delivery()
    assert set(received) == {str(r["id"]) for r in rows}
    duplicates = {d for d, n in received.items() if n > 1}
    assert len(duplicates) <= webhook_jobs.FLUSH_EVERY + webhook_jobs.CONCURRENCY
    bodies: dict[str, set[bytes]] = {}
    for request in receiver.requests:
        bodies.setdefault(request.delivery, set()).add(request.body)
    assert all(len(found) == 1 for found in bodies.values())
    events = [json.loads(next(iter(found)))["id"] for found in bodies.values()]
    assert len(events) == len(set(events)) == 300
