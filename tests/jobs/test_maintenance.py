"""The purge of expired pending members and the expiry reminders, awaited directly, through
the `purge-expired` command, and as messages to real Dramatiq workers."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import dramatiq
import pytest

from db import maintenance
from require2fa import expiry
from require2fa.settings import DEV_SECRET_KEY as KEY
from tests.factories import (
    add_member,
    create_user,
    link_in,
    owner_and_org,
    remove_for_2fa,
    token_for,
)

ROOT = Path(__file__).resolve().parents[2]


async def organization(pool, slug: str = "acme"):
    owner, org = await owner_and_org(
        pool, slug, f"owner@{slug}.example", has2fa=True, teams=("backend", "frontend")
    )
    return owner, org


async def removed(pool, org, settings, name: str, *, expires_in: timedelta) -> int:
    """A member removed for 2FA whose window ends `expires_in` from now (negative: ended)."""
    user = await create_user(pool, f"{name}@example.com")
    member_id = await add_member(pool, org["id"], user, teams=("backend", "frontend"))
    await remove_for_2fa(pool, member_id, settings)
    async with pool.acquire() as conn:
        await conn.execute(
            "update members set reinstate_by = now() + $2::interval where id = $1",
            member_id,
            expires_in,
        )
    return member_id


async def count(pool, sql: str, *args) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


# --- Purge --------------------------------------------------------------------------------


async def test_purge_deletes_expired_in_batches_and_keeps_history(pool, settings) -> None:
    _, org = await organization(pool)
    expired = [
        await removed(pool, org, settings, f"gone{n}", expires_in=timedelta(seconds=-1))
        for n in range(5)
    ]
    waiting = await removed(pool, org, settings, "waiting", expires_in=timedelta(days=1))
    active = await add_member(pool, org["id"], await create_user(pool, "active@example.com"))
    async with pool.acquire() as conn:
        invited = await conn.fetchval(
            """insert into members (organization_id, email, role, pending_reason, token_hash)
               values ($1, 'invited@example.com', 'member', 'invite', 'x') returning id""",
            org["id"],
        )
        result = await maintenance.purge_expired(conn, batch_size=2)
    assert (result.purged, result.batches) == (5, 3)

    left = await count(
        pool, "select array_agg(id order by id) from members where id <> all($1)", []
    )
    assert set(left) >= {waiting, active, invited} and not set(left) & set(expired)
    assert (
        await count(pool, "select count(*) from member_teams where member_id = any($1)", expired)
        == 0
    )
    assert await count(pool, "select count(*) from member_teams where member_id = $1", waiting) == 2
    assert (
        await count(pool, "select count(*) from purged_members where token_hash is not null") == 5
    )

    async with pool.acquire() as conn:
        events = await conn.fetch(
            """select target_member_id, event, data, actor_label from audit_log
               where target_member_id = any($1) order by id""",
            expired,
        )
    pending = [e for e in events if e["event"] == "member.pending"]
    removals = [e for e in events if e["event"] == "member.remove"]
    assert len(pending) == 5 and len(removals) == 5  # history kept, one removal each
    assert {e["target_member_id"] for e in removals} == set(expired)
    for entry in removals:
        assert entry["data"]["reason"] == "2fa-window-expired"
        assert entry["data"]["email"].startswith("gone")
        assert entry["actor_label"] == "require2fa"

    # Again: nothing left to do, nothing written.
    async with pool.acquire() as conn:
        again = await maintenance.purge_expired(conn, batch_size=2)
    assert again.purged == 0
    assert await count(pool, "select count(*) from audit_log where event = 'member.remove'") == 5


async def test_two_purges_at_once_remove_each_member_once(pool, settings) -> None:
    _, org = await organization(pool)
    async with pool.acquire() as conn:
        user_ids = await conn.fetch(
            """insert into users (email) select 'bulk' || n || '@example.com'
               from generate_series(1, 40) n returning id, email"""
        )
        await conn.execute(
            """insert into members (organization_id, email, role, pending_reason, token_hash,
                                    reinstate_by, removed_at)
               select $1, email, 'member', '2fa', 'x', now() - interval '1 day',
                      now() - interval '91 days'
               from unnest($2::text[]) email""",
            org["id"],
            [row["email"] for row in user_ids],
        )

    async def purge() -> int:
        async with pool.acquire() as conn:
            return (await maintenance.purge_expired(conn, batch_size=3)).purged

    first, second = await asyncio.gather(purge(), purge())
    assert first + second == 40
    assert await count(pool, "select count(*) from audit_log where event = 'member.remove'") == 40
    assert await count(pool, "select count(*) from purged_members") == 40


async def test_purge_expired_command(pool, settings) -> None:
    _, org = await organization(pool)
    member_id = await removed(pool, org, settings, "gone", expires_in=timedelta(seconds=-1))
    env = {**os.environ, "DATABASE_URL": settings.database_url, "ENVIRONMENT": "development"}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("require2fa")),
        "purge-expired",
        "--batch-size",
        "10",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("purged 1 expired pending member(s)")
    assert await count(pool, "select count(*) from members where id = $1", member_id) == 0


# --- Expiry reminders ---------------------------------------------------------------------


async def reminders(pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "select * from email_outbox where template = 'expiry_soon' order by member_id"
        )


async def test_expiry_reminder_once_with_the_current_link(client, pool, settings) -> None:
    owner, org = await organization(pool)
    soon = await removed(pool, org, settings, "soon", expires_in=timedelta(days=3))
    later = await removed(pool, org, settings, "later", expires_in=timedelta(days=10))
    await removed(pool, org, settings, "past", expires_in=timedelta(seconds=-1))

    # An owner resent the email: the reminder must carry that newest link.
    resent = await client.put(
        f"/api/0/organizations/acme/members/{soon}/",
        json={"reinvite": True},
        headers=await token_for(pool, owner["id"]),
    )
    assert resent.status == 200
    async with pool.acquire() as conn:
        sealed = await conn.fetchval(
            """select context->>'accept_url_sealed' from email_outbox
               where member_id = $1 order by id desc limit 1""",
            soon,
        )
        reinstate_by = await conn.fetchval("select reinstate_by from members where id = $1", soon)
        first = await expiry.expiry_reminders(conn, settings.base_url, secret_key=KEY)
        second = await expiry.expiry_reminders(conn, settings.base_url, secret_key=KEY)
    assert (first.queued, second.queued) == (1, 0)

    [reminder] = await reminders(pool)
    assert reminder["member_id"] == soon and reminder["to_address"] == "soon@example.com"
    assert reminder["dedupe_key"] == f"expiry:{soon}:{reinstate_by.isoformat()}"
    assert reminder["context"] == {
        "org_name": org["name"],
        "org_slug": "acme",
        "accept_url_sealed": sealed,
        "reinstate_by": reinstate_by.isoformat(),
    }
    page = urlsplit(link_in(sealed)).path.removeprefix("/accept/")
    assert (await client.get(f"/api/0/accept-invite/{page}")).status == 200
    assert await count(
        pool, "select expiry_reminded_at is not null from members where id = $1", soon
    )
    assert not await count(
        pool, "select expiry_reminded_at is not null from members where id = $1", later
    )

    # Even if the mark were lost, the dedupe key keeps it to one email per window.
    async with pool.acquire() as conn:
        await conn.execute("update members set expiry_reminded_at = null where id = $1", soon)
        assert (await expiry.expiry_reminders(conn, settings.base_url, secret_key=KEY)).queued == 0
    assert len(await reminders(pool)) == 1


async def test_expiry_reminder_without_a_link_on_record_mints_one(client, pool, settings) -> None:
    _, org = await organization(pool)
    soon = await removed(pool, org, settings, "soon", expires_in=timedelta(days=2))
    async with pool.acquire() as conn:
        old = link_in(
            await conn.fetchval(
                "select context->>'accept_url_sealed' from email_outbox where member_id = $1", soon
            )
        )
        await conn.execute("delete from email_outbox where member_id = $1", soon)
        assert (await expiry.expiry_reminders(conn, settings.base_url, secret_key=KEY)).queued == 1
    [reminder] = await reminders(pool)
    fresh = link_in(reminder["context"])
    assert fresh != old
    api = "/api/0/accept-invite/"
    assert (await client.get(api + urlsplit(fresh).path.removeprefix("/accept/"))).status == 200
    assert (await client.get(api + urlsplit(old).path.removeprefix("/accept/"))).status == 400


# --- As messages to real workers ----------------------------------------------------------


@pytest.fixture
def worker(start_worker) -> dramatiq.Worker:
    """Two worker threads consuming the `maintenance` queue."""
    return start_worker("maintenance")


@pytest.mark.e2e
async def test_e2e_double_delivery_changes_nothing(pool, settings, worker) -> None:
    from jobs import maintenance as maintenance_jobs
    from jobs.broker import broker

    _, org = await organization(pool)
    gone = [
        await removed(pool, org, settings, f"gone{n}", expires_in=timedelta(seconds=-1))
        for n in range(3)
    ]
    soon = await removed(pool, org, settings, "soon", expires_in=timedelta(days=6))

    for actor in (maintenance_jobs.purge_expired, maintenance_jobs.expiry_reminders):
        await asyncio.to_thread(actor.send)
        await asyncio.to_thread(actor.send)
    await asyncio.to_thread(broker.join, "maintenance", timeout=60_000)
    await asyncio.to_thread(worker.join)

    assert await count(pool, "select count(*) from members where id = any($1)", gone) == 0
    assert await count(pool, "select count(*) from audit_log where event = 'member.remove'") == 3
    [reminder] = await reminders(pool)
    assert reminder["member_id"] == soon
