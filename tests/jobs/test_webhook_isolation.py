"""A receiver that is slow, failing, unreachable or gone delays only its own deliveries: real
receivers on loopback (one that accepts connections and never answers), PostgreSQL and
`jobs.webhooks.dispatch`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from db import audit
from db.audit import Actor
from jobs import webhooks as webhook_jobs
from require2fa import webhooks
from tests.conftest import _free_port
from tests.factories import create_org, create_user
from tests.webhook_receiver import Answer, Receiver

ACTOR = Actor(label="tests")


class Silent:
    """Accepts TCP connections, reads what comes and never answers; counts the connections
    open and those the client gave up (closed)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.open = 0
        self.closed = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        finally:
            self.open -= 1
            self.closed += 1
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()


@pytest.fixture
async def silent() -> AsyncIterator[Silent]:
    server = Silent()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


async def _org(pool: asyncpg.Pool, slug: str) -> asyncpg.Record:
    owner = await create_user(pool, f"owner@{slug}.test", has2fa=True)
    return await create_org(pool, slug, owner["id"])


async def _subscribe(pool, settings, org_id: int, url: str) -> webhooks.Created:
    async with pool.acquire() as conn, conn.transaction():
        return await webhooks.create(
            conn,
            organization_id=org_id,
            url=url,
            events=["member.edit"],
            actor=ACTOR,
            settings=settings,
        )


async def _record(pool: asyncpg.Pool, org_id: int, count: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for n in range(count):
            await audit.record(
                conn, organization_id=org_id, event="member.edit", actor=ACTOR, data={"n": n}
            )


async def test_dead_receivers_do_not_delay_another_organizations_delivery(
    pool, settings, silent, receiver
) -> None:
    dead = await _org(pool, "dead")
    for n in range(webhooks.MAX_WEBHOOKS):
        await _subscribe(pool, settings, dead["id"], f"http://127.0.0.1:{silent.port}/h{n}")
    await _record(pool, dead["id"], 12)  # 240 deliveries queued ahead of the live one
    live = await _org(pool, "live")
    await _subscribe(pool, settings, live["id"], receiver.url)
    await _record(pool, live["id"], 1)

    session = webhook_jobs.client_session(settings, timeout=3.0)
    try:
        sending = asyncio.create_task(webhook_jobs.dispatch(pool, settings, session=session))
        await receiver.wait_for(1, limit=30)
        # The live delivery arrived while the dead receivers hold requests, none given up yet.
        in_flight, given_up = silent.open, silent.closed
        async with pool.acquire() as conn:
            retried = await conn.fetchval(
                """select count(*) from webhook_deliveries d join webhooks w on w.id = d.webhook_id
                    where w.organization_id = $1 and d.last_error is not null""",
                dead["id"],
            )
        report = await asyncio.wait_for(sending, 60)
    finally:
        await session.close()

    assert in_flight > 0 and given_up == 0 and retried == 0
    assert in_flight <= webhooks.MAX_WEBHOOKS * webhook_jobs.CONCURRENCY
    assert report.delivered == 1 and report.retried == 240
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """select w.organization_id, d.status from webhook_deliveries d
                 join webhooks w on w.id = d.webhook_id"""
        )
    assert {r["status"] for r in rows if r["organization_id"] == dead["id"]} == {"queued"}
    assert [r["status"] for r in rows if r["organization_id"] == live["id"]] == ["delivered"]


async def test_a_webhook_has_at_most_two_requests_in_flight(pool, settings, receiver) -> None:
    org = await _org(pool, "acme")
    await _subscribe(pool, settings, org["id"], receiver.url)
    await _record(pool, org["id"], 12)
    receiver.default = Answer(200, "ok", pause=0.2)
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            async with pool.acquire() as conn:
                held = await conn.fetchval(
                    "select count(*) from webhook_deliveries where status = 'sending'"
                )
            most = max(most, held)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        report = await webhook_jobs.dispatch(pool, settings)
    finally:
        watcher.cancel()
    assert report.delivered == 12
    assert 0 < most <= webhook_jobs.CONCURRENCY


async def test_a_410_turns_the_webhook_off_audited_and_its_queue_is_not_attempted(
    pool, settings, receiver, client
) -> None:
    from tests.factories import token_for

    org = await _org(pool, "acme")
    gone = await _subscribe(pool, settings, org["id"], receiver.url)
    other = Receiver()
    await other.start()
    try:
        async with pool.acquire() as conn, conn.transaction():
            await webhooks.create(
                conn,
                organization_id=org["id"],
                url=other.url,
                events=["webhook.disable"],
                actor=ACTOR,
                settings=settings,
            )
        await _record(pool, org["id"], 6)
        receiver.default = Answer(410, "this hook was removed")

        await webhook_jobs.dispatch(pool, settings)

        attempted = len(receiver.requests)
        assert 1 <= attempted <= webhook_jobs.CONCURRENCY
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "select status, last_status, last_error from webhook_deliveries"
                " where webhook_id = $1",
                gone.webhook["id"],
            )
            entries = await conn.fetch(
                "select actor_label, data from audit_log where event = 'webhook.disable'"
            )
        assert [r["status"] for r in rows] == ["failed"] * 6
        assert sum(r["last_status"] == 410 for r in rows) == attempted
        assert all("410" in r["last_error"] for r in rows)
        assert len(entries) == 1 and entries[0]["actor_label"] == "require2fa"
        # The organization's other webhook hears of it.
        assert [r.headers["X-Require2FA-Event"] for r in other.requests] == ["webhook.disable"]

        # Later events are not queued for it, and nothing more is sent.
        await _record(pool, org["id"], 2)
        await webhook_jobs.dispatch(pool, settings)
        assert len(receiver.requests) == attempted
        async with pool.acquire() as conn:
            owner_id = await conn.fetchval(
                "select user_id from members where organization_id = $1", org["id"]
            )
            assert (
                await conn.fetchval(
                    "select count(*) from webhook_deliveries where webhook_id = $1",
                    gone.webhook["id"],
                )
                == 6
            )
        headers = await token_for(pool, owner_id)
        answer = await client.get(
            f"/api/0/organizations/acme/webhooks/{gone.webhook['id']}/", headers=headers
        )
        assert (await answer.json())["active"] is False
        log = await client.get(
            "/api/0/organizations/acme/audit-logs/?event=webhook.disable", headers=headers
        )
        assert [row["event"] for row in (await log.json())["rows"]] == ["webhook.disable"]
    finally:
        await other.stop()
