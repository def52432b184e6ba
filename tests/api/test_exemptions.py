"""Exemptions from the requirement: `PUT …/members/{id}/` `{"exempt2FA": {reason, until}}`."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from db.audit import Actor
from jobs.enforcement import coordinate_run, remove_batch_now
from jobs.exemptions import lapse
from require2fa import organization_settings
from tests.factories import add_member, create_user, owner_and_org, settle_enforcement, token_for


def member_url(member_id: int) -> str:
    return f"/api/0/organizations/acme/members/{member_id}/"


def later(**delta) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def acme(pool, *, required: bool = False):
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    if required:
        async with pool.acquire() as conn:
            await conn.execute(
                "update organizations set require_2fa = true where id = $1", org["id"]
            )
    return org, owner, await token_for(pool, owner["id"])


async def bot(pool, org_id: int, email: str = "ci-bot@example.com"):
    user = await create_user(pool, email)
    return user, await add_member(pool, org_id, user)


async def exempt(client, headers, member_id: int, **exemption):
    body = {"exempt2FA": exemption or {"reason": "CI bot", "until": later(days=30)}}
    return await client.put(member_url(member_id), json=body, headers=headers)


async def test_an_owner_exempts_a_bot_and_it_shows_everywhere(client, pool) -> None:
    org, owner, headers = await acme(pool)
    _user, bot_id = await bot(pool, org["id"])
    _alice, _alice_id = await bot(pool, org["id"], "alice@example.com")
    until = later(days=30)
    response = await exempt(client, headers, bot_id, reason="CI bot", until=until)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["exempt2FA"] == {
        "reason": "CI bot",
        "until": datetime.fromisoformat(until).isoformat(),
        "by": {"id": str(owner["id"]), "name": "owner@example.com"},
    }

    listed = await client.get(
        "/api/0/organizations/acme/members/", params={"query": "is:exempt"}, headers=headers
    )
    assert [row["email"] for row in await listed.json()] == ["ci-bot@example.com"]
    compliance = await (
        await client.get("/api/0/organizations/acme/2fa-compliance/", headers=headers)
    ).json()
    assert compliance["count"] == 1  # alice only
    assert [m["email"] for m in compliance["members"]] == ["alice@example.com"]
    report = await (
        await client.get(
            "/api/0/organizations/acme/2fa-compliance/", params={"format": "csv"}, headers=headers
        )
    ).text()
    states = {row["email"]: row["state"] for row in csv.DictReader(io.StringIO(report))}
    assert states["ci-bot@example.com"] == "exempt" and states["alice@example.com"] == "active"

    async with pool.acquire() as conn:
        (entry,) = await conn.fetch("select * from audit_log where event = 'member.2fa-exempt'")
    assert entry["target_member_id"] == bot_id and entry["actor_user_id"] == owner["id"]
    assert entry["data"]["exempt2FA"]["reason"] == "CI bot"

    lifted = await client.put(member_url(bot_id), json={"exempt2FA": None}, headers=headers)
    assert lifted.status == 200 and (await lifted.json())["exempt2FA"] is None


@pytest.mark.parametrize(
    ("exemption", "field"),
    [
        ({"reason": "CI bot", "until": "2020-01-01T00:00:00Z"}, "exempt2FA.until"),
        ({"reason": "CI bot", "until": "in a while"}, "exempt2FA.until"),
        ({"reason": "CI bot", "until": "2099-01-01T00:00:00"}, "exempt2FA.until"),  # naive
        ({"reason": "", "until": "2099-01-01T00:00:00Z"}, "exempt2FA.reason"),
        ({"reason": "   ", "until": "2099-01-01T00:00:00Z"}, "exempt2FA.reason"),
        ({"reason": "x" * 201, "until": "2099-01-01T00:00:00Z"}, "exempt2FA.reason"),
        ({"until": "2099-01-01T00:00:00Z"}, "exempt2FA.reason"),
    ],
)
async def test_bad_exemptions_are_400s(client, pool, exemption, field) -> None:
    org, _owner, headers = await acme(pool)
    _user, bot_id = await bot(pool, org["id"])
    response = await client.put(member_url(bot_id), json={"exempt2FA": exemption}, headers=headers)
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["detail"] and field in body["errors"], body


async def test_at_most_a_year_and_only_on_its_own(client, pool) -> None:
    org, _owner, headers = await acme(pool)
    _user, bot_id = await bot(pool, org["id"])
    too_long = await exempt(client, headers, bot_id, reason="CI bot", until=later(days=366))
    assert too_long.status == 400
    assert "at most a year" in str((await too_long.json())["errors"])
    mixed = await client.put(
        member_url(bot_id),
        json={"role": "admin", "exempt2FA": {"reason": "CI", "until": later(days=1)}},
        headers=headers,
    )
    assert mixed.status == 400
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "select role, exempt_2fa_until from members where id = $1", bot_id
        )
    assert row["role"] == "member" and row["exempt_2fa_until"] is None


async def test_owners_only_and_members_only(client, pool) -> None:
    org, _owner, headers = await acme(pool)
    _user, bot_id = await bot(pool, org["id"])
    manager = await create_user(pool, "manager@example.com", has2fa=True)
    await add_member(pool, org["id"], manager, role="manager")
    refused = await exempt(client, await token_for(pool, manager["id"]), bot_id)
    assert refused.status == 403
    async with pool.acquire() as conn:
        invited = await conn.fetchval(
            """insert into members (organization_id, email, role, pending_reason, token_hash)
               values ($1, 'inv@example.com', 'member', 'invite', '\\x00') returning id""",
            org["id"],
        )
    assert (await exempt(client, headers, invited)).status == 409
    assert (await exempt(client, headers, 999999)).status == 404


async def test_an_exempt_member_is_not_blocked_nor_removed(client, pool, settings) -> None:
    org, owner, headers = await acme(pool)
    bot_user, bot_id = await bot(pool, org["id"])
    alice, alice_id = await bot(pool, org["id"], "alice@example.com")
    assert (await exempt(client, headers, bot_id)).status == 200
    on = await client.put("/api/0/organizations/acme/", json={"require2FA": True}, headers=headers)
    run_id = int((await on.json())["enforcement"]["id"])
    await coordinate_run(pool, run_id, send=lambda *args: None)
    result = await remove_batch_now(pool, settings, run_id, 0)
    assert result is not None and result.removed == 1  # alice, not the bot

    bot_headers = await token_for(pool, bot_user["id"])
    seen = await client.get("/api/0/organizations/acme/", headers=bot_headers)
    assert seen.status == 200
    async with pool.acquire() as conn:
        rows = {r["id"]: r for r in await conn.fetch("select * from members")}
    assert rows[bot_id]["user_id"] == bot_user["id"]
    assert rows[alice_id]["user_id"] is None and rows[alice_id]["pending_reason"] == "2fa"

    # Lifted while 2FA is required: treated as anyone else at once.
    lifted = await client.put(member_url(bot_id), json={"exempt2FA": None}, headers=headers)
    body = await lifted.json()
    assert lifted.status == 200 and body["pending"] is True and body["exempt2FA"] is None
    async with pool.acquire() as conn:
        mails = await conn.fetch(
            "select to_address from email_outbox where template = 'removed_for_2fa' order by id"
        )
    assert [m["to_address"] for m in mails] == ["alice@example.com", "ci-bot@example.com"]
    async with pool.acquire() as conn:
        reasons = await conn.fetch(
            "select data->>'reason' as reason from audit_log where event = 'member.pending'"
            " order by id"
        )
        lifted_row = await conn.fetchrow("select * from members where id = $1", bot_id)
    assert [r["reason"] for r in reasons] == ["2fa", "2fa"]
    assert lifted_row["removal_reason"] == "2fa" and lifted_row["removed_by_run"] is None


@pytest.mark.e2e
async def test_an_exemption_lapsing_mid_run(client, pool, settings, broker, start_worker) -> None:
    """Two exempt bots, in the first and the last batch, exempt for two more seconds. The first
    batch runs while they are exempt; the others after the exemptions lapsed. The bot of the
    last batch is removed by the run; the one of the first batch by the next lapse sweep; each
    gets one Mandatory email."""
    org, owner, headers = await acme(pool)
    first_bot, first_id = await bot(pool, org["id"], "bot1@example.com")
    for n in range(3):
        await bot(pool, org["id"], f"enrolled{n}@example.com")
        async with pool.acquire() as conn:
            await conn.execute(
                """insert into authenticators (user_id, type, confirmed_at)
                   select id, 'totp', now() from users where email = $1""",
                f"enrolled{n}@example.com",
            )
    last_bot, last_id = await bot(pool, org["id"], "bot2@example.com")
    until = datetime.now(UTC) + timedelta(seconds=2)
    for member_id in (first_id, last_id):
        response = await exempt(client, headers, member_id, reason="bot", until=until.isoformat())
        assert response.status == 200

    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org["id"],
            actor=Actor(user_id=owner["id"], label=owner["email"]),
            role="owner",
        )
    run_id = change.run["id"]
    lost: list = []
    await coordinate_run(pool, run_id, batch_size=2, send=lambda *a: lost.append(a))
    assert len(lost) == 3
    first = await remove_batch_now(pool, settings, run_id, 0)  # owner + bot1: nobody removed
    assert first is not None and first.removed == 0

    async with pool.acquire() as conn:  # the database's clock says when it will have lapsed
        left = await conn.fetchval("select extract(epoch from $1 - now())::float8", until)
    await asyncio.sleep(max(0.0, left) + 0.2)

    start_worker("enforcement", threads=2)
    from jobs.enforcement import remove_batch

    for run, batch_no in lost[1:]:
        await asyncio.to_thread(remove_batch.send, run, batch_no)
    await settle_enforcement(pool, broker, timeout=60)
    async with pool.acquire() as conn:
        rows = {r["id"]: r for r in await conn.fetch("select * from members")}
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
    assert run["status"] == "completed" and run["removed"] == 1
    assert rows[last_id]["user_id"] is None  # lapsed before its batch: removed by the run
    assert rows[first_id]["user_id"] == first_bot["id"]  # its batch ran while it was exempt

    await asyncio.to_thread(lapse.send)  # what the clock sends every minute
    await settle_enforcement(pool, broker, timeout=60)
    await asyncio.to_thread(lapse.send)  # and again: nothing more happens
    await settle_enforcement(pool, broker, timeout=60)
    async with pool.acquire() as conn:
        rows = {r["id"]: r for r in await conn.fetch("select * from members")}
        mails = await conn.fetch(
            "select to_address from email_outbox where template = 'removed_for_2fa'"
        )
        lapsed = await conn.fetch(
            "select * from audit_log where event = 'member.2fa-exempt' and data ? 'lapsed'"
        )
        pending = await conn.fetch(
            "select target_member_id from audit_log where event = 'member.pending'"
        )
    assert rows[first_id]["user_id"] is None and rows[first_id]["pending_reason"] == "2fa"
    assert rows[first_id]["exempt_2fa_until"] is None and rows[last_id]["exempt_2fa_until"] is None
    assert sorted(m["to_address"] for m in mails) == ["bot1@example.com", "bot2@example.com"]
    assert sorted(e["target_member_id"] for e in lapsed) == sorted([first_id, last_id])
    assert sorted(p["target_member_id"] for p in pending) == sorted([first_id, last_id])
    assert last_bot["id"] != first_bot["id"]
