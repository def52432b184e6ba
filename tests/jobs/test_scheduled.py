"""Enforcement on a date: `enforceAt`, the `scheduled` run, the countdown reminders, the banner,
and the start at the moment, with real workers, real clocks and deadlines in seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from commands.clock import Clock, sending_broker
from db import schedule
from jobs.scheduled import scheduled
from require2fa import scheduling
from require2fa.emails import render
from tests.factories import (
    add_member,
    add_totp,
    create_user,
    owner_and_org,
    settle_enforcement,
    token_for,
)

ORG = "/api/0/organizations/acme/"


def at(**delta) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


async def acme(pool):
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    alice = await create_user(pool, "alice@example.com")
    alice_member = await add_member(pool, org["id"], alice)
    return org, owner, alice, alice_member, await token_for(pool, owner["id"])


async def wait_until(pool, moment: datetime, slack: float = 0.2) -> None:
    """Sleeps until the database's clock has passed `moment`."""
    async with pool.acquire() as conn:
        left = await conn.fetchval("select extract(epoch from $1 - now())::float8", moment)
    await asyncio.sleep(max(0.0, left) + slack)


async def test_scheduling_through_the_api_and_cancelling_it(client, pool) -> None:
    _org, _owner, alice, _member, headers = await acme(pool)
    when = at(days=7)
    response = await client.put(
        ORG, json={"require2FA": True, "enforceAt": when.isoformat()}, headers=headers
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["require2FA"] is False  # not yet: nobody is removed or blocked before then
    assert body["enforceAt"] == when.isoformat()
    assert body["enforcement"]["status"] == "scheduled"
    assert body["enforcement"]["enforceAt"] == when.isoformat()

    # A member without 2FA is not blocked meanwhile.
    seen = await client.get(ORG, headers=await token_for(pool, alice["id"]))
    assert seen.status == 200 and (await seen.json())["enforceAt"] == when.isoformat()
    listed = await (await client.get(ORG + "2fa-enforcements/", headers=headers)).json()
    assert listed[0]["status"] == "scheduled"
    assert listed[0]["enforceAt"] == when.isoformat()

    off = await client.put(ORG, json={"require2FA": False}, headers=headers)
    body = await off.json()
    assert off.status == 200 and body["enforceAt"] is None and body["require2FA"] is False
    async with pool.acquire() as conn:
        status = await conn.fetchval("select status from enforcement_runs")
        entries = await conn.fetch(
            "select data from audit_log where event = 'org.edit' order by id"
        )
    assert status == "cancelled"
    assert [e["data"] for e in entries] == [
        {"require_2fa": "to True", "enforce_at": when.isoformat()},
        # The audit log says it in words: "cancelled the scheduled requirement".
        {"require_2fa": "to False", "schedule": "cancelled"},
    ]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"require2FA": True, "enforceAt": "2020-01-01T00:00:00Z"}, 400),
        ({"require2FA": True, "enforceAt": "2026-13-01T00:00:00Z"}, 400),
        ({"require2FA": True, "enforceAt": "2099-01-01T00:00:00"}, 400),  # no offset
        ({"enforceAt": "2099-01-01T00:00:00Z"}, 400),
        ({"require2FA": False, "enforceAt": "2099-01-01T00:00:00Z"}, 400),
    ],
)
async def test_bad_dates_are_400s(client, pool, body, status) -> None:
    *_rest, headers = await acme(pool)
    response = await client.put(ORG, json=body, headers=headers)
    assert response.status == status, await response.text()
    assert (await response.json())["detail"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from enforcement_runs") == 0


async def test_more_than_a_year_ahead_is_refused(client, pool) -> None:
    *_rest, headers = await acme(pool)
    response = await client.put(
        ORG, json={"require2FA": True, "enforceAt": at(days=366).isoformat()}, headers=headers
    )
    assert response.status == 400 and "a year" in (await response.json())["detail"]


async def test_turning_it_on_now_replaces_the_schedule(client, pool) -> None:
    *_rest, headers = await acme(pool)
    await client.put(
        ORG, json={"require2FA": True, "enforceAt": at(days=3).isoformat()}, headers=headers
    )
    now = await client.put(ORG, json={"require2FA": True}, headers=headers)
    body = await now.json()
    assert body["require2FA"] is True and body["enforcement"]["status"] == "queued"
    async with pool.acquire() as conn:
        statuses = await conn.fetch("select status from enforcement_runs order by id")
    assert [r["status"] for r in statuses] == ["cancelled", "queued"]


@pytest.mark.e2e
async def test_the_scheduled_run_starts_once_with_two_clocks(
    client, pool, settings, broker, start_worker, mailbox
) -> None:
    org, owner, alice, alice_member, headers = await acme(pool)
    when = at(seconds=2)
    response = await client.put(
        ORG, json={"require2FA": True, "enforceAt": when.isoformat()}, headers=headers
    )
    run_id = int((await response.json())["enforcement"]["id"])
    start_worker("enforcement", "email", threads=4)
    first, second = (Clock(settings, sending_broker(settings)) for _ in range(2))
    try:
        # Before the moment, both clocks tick: nothing starts.
        for clock in (first, second):
            await asyncio.to_thread(clock.tick, "enforcement.scheduled", "enforcement")
        await settle_enforcement(pool, broker, timeout=30)
        async with pool.acquire() as conn:
            assert await conn.fetchval("select status from enforcement_runs") == "scheduled"
            assert await conn.fetchval("select user_id from members where id = $1", alice_member)

        # The leading clock is restarted across the moment; the other one ticks meanwhile.
        await asyncio.to_thread(first.close)
        await wait_until(pool, when)
        restarted = Clock(settings, sending_broker(settings))
        for clock in (second, restarted, second):
            await asyncio.to_thread(clock.tick, "enforcement.scheduled", "enforcement")
        # And the message delivered twice besides, as after a crash between two lines.
        await asyncio.to_thread(scheduled.send)
        await asyncio.to_thread(scheduled.send)
        await settle_enforcement(pool, broker, timeout=60)
        await asyncio.to_thread(restarted.close)
    finally:
        if not second._loop.is_closed():
            await asyncio.to_thread(second.close)

    async with pool.acquire() as conn:
        runs = await conn.fetch("select * from enforcement_runs")
        org_row = await conn.fetchrow("select * from organizations where id = $1", org["id"])
        alice_row = await conn.fetchrow("select * from members where id = $1", alice_member)
        pending = await conn.fetchval(
            "select count(*) from audit_log where event = 'member.pending'"
        )
    (run,) = runs
    assert run["id"] == run_id and run["status"] == "completed" and run["removed"] == 1
    assert run["actor_user_id"] == owner["id"]
    assert org_row["require_2fa"] is True and org_row["enforce_at"] is None
    assert alice_row["user_id"] is None and alice_row["pending_reason"] == "2fa"
    assert pending == 1
    for _ in range(400):
        if len(mailbox.to("alice@example.com")) >= 2:
            break
        await asyncio.sleep(0.05)
    # Scheduled two seconds ahead: the 1-day countdown went out at once, then the removal.
    subjects = [str(mail["Subject"]) for mail in mailbox.to("alice@example.com")]
    countdown = f"Acme will require two-factor authentication on {when:%B} {when.day}, {when.year}"
    assert sum(countdown == subject for subject in subjects) == 1, subjects
    assert sum("Mandatory: Enable Two-Factor Authentication" in s for s in subjects) == 1
    assert len(subjects) == 2 and alice["id"] is not None


@pytest.mark.e2e
async def test_a_countdown_reminder_skips_who_enrolled_in_between(
    client, pool, settings, broker, start_worker
) -> None:
    org, _owner, _alice, _member, headers = await acme(pool)
    bob = await create_user(pool, "bob@example.com")
    await add_member(pool, org["id"], bob)
    # Seven days and three seconds ahead: the 14-day reminder is due now, the 7-day one in 3 s.
    when = at(days=7, seconds=3)
    await client.put(ORG, json={"require2FA": True, "enforceAt": when.isoformat()}, headers=headers)
    start_worker("enforcement", threads=2)

    async def countdown_rows() -> list:
        async with pool.acquire() as conn:
            return await conn.fetch(
                "select * from email_outbox where template = 'countdown_2fa' order by id"
            )

    await asyncio.to_thread(scheduled.send)
    await settle_enforcement(pool, broker, timeout=30)
    fourteen = await countdown_rows()
    assert sorted(r["to_address"] for r in fourteen) == ["alice@example.com", "bob@example.com"]
    assert all(r["context"]["days"] == 14 for r in fourteen)

    async with pool.acquire() as conn:
        await add_totp(conn, bob["id"])  # bob sets up 2FA in between
    await asyncio.to_thread(scheduled.send)  # the same stage again: nothing new
    await settle_enforcement(pool, broker, timeout=30)
    assert len(await countdown_rows()) == 2

    await wait_until(pool, when - timedelta(days=7))
    for _ in range(2):
        await asyncio.to_thread(scheduled.send)
        await settle_enforcement(pool, broker, timeout=30)
    rows = await countdown_rows()
    seven = [r for r in rows if r["context"]["days"] == 7]
    assert [r["to_address"] for r in seven] == ["alice@example.com"]
    assert len(rows) == 3
    subject = render("countdown_2fa", seven[0]["context"], settings).subject
    assert (
        subject
        == f"Acme will require two-factor authentication on {when:%B} {when.day}, {when.year}"
    )
    async with pool.acquire() as conn:
        assert await conn.fetchval("select status from enforcement_runs") == "scheduled"


def test_countdown_stages() -> None:
    day = timedelta(days=1)
    when = datetime(2027, 3, 15, 9, tzinfo=UTC)
    assert schedule.stage_due(when, when - 20 * day, None) is None
    assert schedule.stage_due(when, when - 14 * day, None) == 14
    assert schedule.stage_due(when, when - 10 * day, 14) is None
    assert schedule.stage_due(when, when - 7 * day, 14) == 7
    assert schedule.stage_due(when, when - 3 * day, None) == 7  # scheduled 3 days ahead
    assert schedule.stage_due(when, when - day / 2, 7) == 1
    assert schedule.stage_due(when, when - day / 2, 1) is None
    assert schedule.stage_due(when, when, None) is None


async def test_the_banner_on_every_page_for_who_does_not_meet_it(client, pool) -> None:
    from tests.factories import enroll_totp, sign_in

    org, _owner, _alice, _member, headers = await acme(pool)
    when = datetime(2027, 3, 1, 12, tzinfo=UTC)
    async with pool.acquire() as conn:
        await conn.execute(
            "update organizations set enforce_at = $2 where id = $1", org["id"], when
        )
    await sign_in(client, "alice@example.com")
    banner = "Acme will require two-factor authentication on March 1, 2027."
    for path in ("/organizations/acme/", "/account/security/", "/organizations/acme/members/"):
        page = await (await client.get(path)).text()
        assert banner in page, path
    await enroll_totp(client)
    assert banner not in await (await client.get("/organizations/acme/")).text()


async def test_the_tick_starts_a_due_run_once(pool, settings) -> None:
    """Two ticks at once on two connections: one starts the run."""
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into enforcement_runs (organization_id, status, enforce_at)
               values ($1, 'scheduled', now() - interval '1 second')""",
            org["id"],
        )

    async def tick():
        async with pool.acquire() as conn:
            return await scheduling.tick(conn, base_url=settings.base_url)

    results = await asyncio.gather(tick(), tick(), tick())
    assert sorted(len(r.started) for r in results) == [0, 0, 1]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select status from enforcement_runs") == "queued"
        assert await conn.fetchval("select require_2fa from organizations")


async def test_enforce_at_from_the_command_line(pool, database) -> None:
    owner, _ = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    from commands.cli import main

    runner = CliRunner()
    when = at(days=2).replace(microsecond=0)
    result = await asyncio.to_thread(
        runner.invoke,
        main,
        ["enforce", "--org", "acme", "--actor", "owner@example.com", "--at", when.isoformat()],
    )
    assert result.exit_code == 0, result.output
    assert "scheduled for acme at" in result.output
    bad = await asyncio.to_thread(
        runner.invoke,
        main,
        ["enforce", "--org", "acme", "--actor", "owner@example.com", "--at", "soon"],
    )
    assert bad.exit_code == 2 and "ISO 8601" in bad.output
    async with pool.acquire() as conn:
        run = await conn.fetchrow("select * from enforcement_runs")
    assert run["status"] == "scheduled" and run["enforce_at"] == when


async def test_sso_turned_on_cancels_the_schedule(client, pool) -> None:
    *_rest, headers = await acme(pool)
    await client.put(
        ORG, json={"require2FA": True, "enforceAt": at(days=3).isoformat()}, headers=headers
    )
    sso = await client.put(ORG, json={"ssoEnabled": True}, headers=headers)
    body = await sso.json()
    assert sso.status == 200 and body["enforceAt"] is None and body["ssoEnabled"] is True
    async with pool.acquire() as conn:
        assert await conn.fetchval("select status from enforcement_runs") == "cancelled"
        entries = await conn.fetch(
            "select data from audit_log where event = 'org.edit' order by id"
        )
    assert {"require_2fa": "to False", "schedule": "cancelled"} in [e["data"] for e in entries]


async def test_exempt_members_get_no_countdown(client, pool, settings) -> None:
    org, _owner, _alice, _member, headers = await acme(pool)
    robot = await create_user(pool, "bot@example.com")
    robot_id = await add_member(pool, org["id"], robot)
    async with pool.acquire() as conn:
        await conn.execute(
            """update members set exempt_2fa_until = now() + interval '30 days',
                      exempt_2fa_reason = 'bot' where id = $1""",
            robot_id,
        )
    await client.put(
        ORG, json={"require2FA": True, "enforceAt": at(days=2).isoformat()}, headers=headers
    )
    async with pool.acquire() as conn:
        result = await scheduling.tick(conn, base_url=settings.base_url)
        again = await scheduling.tick(conn, base_url=settings.base_url)
        rows = await conn.fetch("select * from email_outbox where template = 'countdown_2fa'")
    assert result.reminders == 1 and again.reminders == 0
    assert [r["to_address"] for r in rows] == ["alice@example.com"]
    assert rows[0]["context"]["days"] == 7  # two days ahead: the 7-day stage is the one due
