"""The scope (`require2FAScope`) before the requirement is on: the countdown reminders of a
scheduled requirement, the reminders an owner sends, and the banner on every page go only to the
members in scope who do not meet it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from jobs.scheduled import scheduled
from tests.factories import add_member, create_user, owner_and_org, settle_enforcement, token_for

ORG = "/api/0/organizations/acme/"


async def scoped_acme(pool):
    """Acme, scoped to its team `web`: Alice in it and Bob out of it, neither with a factor."""
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True, teams=("web",))
    alice = await create_user(pool, "alice@example.com")
    await add_member(pool, org["id"], alice, teams=("web",))
    bob = await create_user(pool, "bob@example.com")
    await add_member(pool, org["id"], bob)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa_scope_teams = '{web}'")
    return await token_for(pool, owner["id"])


async def outbox_to(pool, template: str) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select to_address from email_outbox where template = $1 order by to_address",
            template,
        )
    return [r["to_address"] for r in rows]


async def test_countdown_and_reminders_go_only_to_the_scope(
    client, pool, broker, start_worker
) -> None:
    headers = await scoped_acme(pool)
    reminded = await client.post(ORG + "2fa-reminders/", headers=headers)
    assert reminded.status in (200, 202), await reminded.text()
    start_worker("enforcement", threads=2)
    await settle_enforcement(pool, broker, timeout=30)
    assert await outbox_to(pool, "reminder_2fa") == ["alice@example.com"]

    when = datetime.now(UTC) + timedelta(days=10)
    scheduled_on = await client.put(
        ORG, json={"require2FA": True, "enforceAt": when.isoformat()}, headers=headers
    )
    assert scheduled_on.status == 200, await scheduled_on.text()
    await asyncio.to_thread(scheduled.send)
    await settle_enforcement(pool, broker, timeout=30)
    assert await outbox_to(pool, "countdown_2fa") == ["alice@example.com"]


async def test_the_banner_only_for_members_in_scope(client, pool) -> None:
    from tests.factories import sign_in

    await scoped_acme(pool)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set enforce_at = '2027-03-01 12:00+00'")
    banner = "Acme will require two-factor authentication on March 1, 2027."
    await sign_in(client, "alice@example.com")
    assert banner in await (await client.get("/organizations/acme/")).text()
    client.session.cookie_jar.clear()
    await sign_in(client, "bob@example.com")
    page = await (await client.get("/organizations/acme/")).text()
    assert banner not in page and "Acme" in page
