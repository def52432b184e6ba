"""The require-2FA switch and what shows enforcement, through the HTTP API."""

from __future__ import annotations

import asyncpg
import dramatiq
import pytest

from commands.seed import seed
from db import counts
from jobs.enforcement import coordinate_run, remove_batch_now
from tests.factories import (
    add_member,
    add_totp,
    create_user,
    owner_and_org,
    owner_org_and_token,
    settle_enforcement,
    token_for,
)

PERSONAL = "Cannot require two-factor authentication without personal two-factor enabled."
SSO = "Cannot require two-factor authentication with SSO enabled"


@pytest.fixture
def worker(start_worker) -> dramatiq.Worker:
    """Real Dramatiq worker threads on the `enforcement` queue."""
    return start_worker("enforcement", threads=4)


async def org_with_owner(pool, *, owner_2fa: bool = True) -> tuple[asyncpg.Record, dict]:
    """Organization `acme` and its owner's Authorization headers."""
    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=owner_2fa, teams=("backend",)
    )
    return org, await token_for(pool, owner["id"])


async def owner_enrolls(pool) -> None:
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval("select id from users where email = 'owner@example.com'")
        await add_totp(conn, owner_id)


async def audit_rows(pool, event: str = "org.edit") -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("select * from audit_log where event = $1 order by id", event)


async def put(client, headers, **body):
    return await client.put("/api/0/organizations/acme/", json=body, headers=headers)


async def test_turning_it_on_answers_with_the_queued_run(client, pool, broker) -> None:
    org, headers = await org_with_owner(pool)
    response = await put(client, headers, require2FA=True)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["require2FA"] is True and body["slug"] == "acme"
    assert body["enforcement"]["status"] == "queued"
    run_id = int(body["enforcement"]["id"])

    (entry,) = await audit_rows(pool)
    assert entry["data"] == {"require_2fa": "to True"}
    assert entry["actor_label"] == "owner@example.com" and entry["actor_token_id"] is not None
    assert entry["ip_address"] is not None

    # On while on: the same run, no second run, no second entry.
    again = await put(client, headers, require2FA=True)
    assert (await again.json())["enforcement"]["id"] == str(run_id)
    assert len(await audit_rows(pool)) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from enforcement_runs") == 1

    # Off: the run is cancelled and the change audited.
    off = await put(client, headers, require2FA=False)
    body = await off.json()
    assert body["require2FA"] is False and "enforcement" not in body
    assert [e["data"] for e in await audit_rows(pool)] == [
        {"require_2fa": "to True"},
        {"require_2fa": "to False"},
    ]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select status from enforcement_runs") == "cancelled"


async def test_refusals(client, pool) -> None:
    org, owner_headers = await org_with_owner(pool, owner_2fa=False)
    for role in ("manager", "admin", "member", "billing"):
        user = await create_user(pool, f"{role}@example.com", has2fa=True)
        await add_member(pool, org["id"], user, role=role)
        response = await put(client, await token_for(pool, user["id"]), require2FA=True)
        assert response.status == 403, role
        assert (await response.json())["detail"]

    response = await put(client, owner_headers, require2FA=True)
    assert response.status == 400
    assert (await response.json())["detail"] == PERSONAL

    await owner_enrolls(pool)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set sso_enabled = true")
    response = await put(client, owner_headers, require2FA=True)
    assert response.status == 400
    assert (await response.json())["detail"] == SSO
    response = await put(client, owner_headers, require2FA=True, ssoEnabled=True)
    assert (await response.json())["detail"] == SSO

    assert await audit_rows(pool) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from enforcement_runs") == 0
        assert await conn.fetchval("select require_2fa from organizations") is False


async def test_bad_bodies_are_400(client, pool) -> None:
    _, headers = await org_with_owner(pool)
    for body in ({"require2FA": "perhaps"}, {"require2fa": True}, {"name": ""}, [1]):
        response = await client.put("/api/0/organizations/acme/", json=body, headers=headers)
        assert response.status == 400, body
        assert (await response.json())["detail"]


async def test_sso_turns_the_requirement_off(client, pool, broker) -> None:
    _, headers = await org_with_owner(pool)
    await put(client, headers, require2FA=True)
    response = await put(client, headers, ssoEnabled=True)
    body = await response.json()
    assert body["ssoEnabled"] is True and body["require2FA"] is False
    assert [e["data"] for e in await audit_rows(pool)] == [
        {"require_2fa": "to True"},
        {"sso_enabled": "to True"},
        {"require_2fa": "to False"},
    ]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select status from enforcement_runs") == "cancelled"


async def test_rename_by_manager(client, pool) -> None:
    org, _ = await org_with_owner(pool)
    manager = await create_user(pool, "manager@example.com")
    await add_member(pool, org["id"], manager, role="manager")
    response = await put(client, await token_for(pool, manager["id"]), name="Acme Corp")
    assert response.status == 200
    assert (await response.json())["name"] == "Acme Corp"
    assert [e["data"] for e in await audit_rows(pool)] == [{"name": "to Acme Corp"}]


async def test_enforcement_end_to_end_through_the_api(client, pool, broker, worker) -> None:
    org, headers = await org_with_owner(pool)
    without = []
    for i in range(6):
        user = await create_user(pool, f"user{i}@example.com", has2fa=i % 2 == 0)
        member_id = await add_member(pool, org["id"], user, teams=("backend",))
        if i % 2:
            without.append(member_id)

    compliance = await client.get("/api/0/organizations/acme/2fa-compliance/", headers=headers)
    body = await compliance.json()
    assert body["count"] == 3
    assert sorted(int(m["id"]) for m in body["members"]) == without

    response = await put(client, headers, require2FA=True)
    run_id = (await response.json())["enforcement"]["id"]
    await settle_enforcement(pool, broker, timeout=60)

    detail = await client.get(
        f"/api/0/organizations/acme/2fa-enforcements/{run_id}/", headers=headers
    )
    run = await detail.json()
    assert run["status"] == "completed"
    assert (run["total"], run["removed"], run["skipped"]) == (7, 3, 4)
    assert run["emailsQueued"] == 3 and run["emailsSent"] == 0
    assert run["startedAt"] and run["finishedAt"]
    listed = await client.get("/api/0/organizations/acme/2fa-enforcements/", headers=headers)
    assert [(r["id"], r["emailsQueued"]) for r in await listed.json()] == [(run_id, 3)]

    pending = await client.get(
        "/api/0/organizations/acme/members/?query=is:pending", headers=headers
    )
    rows = await pending.json()
    assert sorted(int(m["id"]) for m in rows) == without
    assert all(m["pendingReason"] == "2fa" and m["reinstateBy"] for m in rows)
    assert all(m["teams"] == ["backend"] for m in rows)

    after = await client.get("/api/0/organizations/acme/2fa-compliance/", headers=headers)
    assert (await after.json())["count"] == 0

    metrics = await (await client.get("/metrics")).text()
    assert 'require2fa_enforcement_runs{status="completed"} 1.0' in metrics
    assert "require2fa_enforcement_members_removed_total 3.0" in metrics
    assert "require2fa_enforcement_batch_seconds_count 1.0" in metrics


async def test_ongoing_enforcement_answers_2fa_required(client, pool) -> None:
    org, headers = await org_with_owner(pool)
    user = await create_user(pool, "late@example.com")
    await add_member(pool, org["id"], user)
    member_headers = await token_for(pool, user["id"])
    assert (await client.get("/api/0/organizations/acme/", headers=member_headers)).status == 200
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true")
    for path in ("", "members/", "teams/"):
        response = await client.get(f"/api/0/organizations/acme/{path}", headers=member_headers)
        assert response.status == 401, path
        assert (await response.json())["code"] == "2fa-required"
    async with pool.acquire() as conn:
        await add_totp(conn, user["id"])
    assert (await client.get("/api/0/organizations/acme/", headers=member_headers)).status == 200


async def test_enforcements_are_for_owners_and_managers(client, pool, broker) -> None:
    org, headers = await org_with_owner(pool)
    response = await put(client, headers, require2FA=True)
    run_id = (await response.json())["enforcement"]["id"]
    detail = await client.get(
        f"/api/0/organizations/acme/2fa-enforcements/{run_id}/", headers=headers
    )
    assert (await detail.json())["status"] == "queued"

    member = await create_user(pool, "member@example.com", has2fa=True)
    await add_member(pool, org["id"], member)
    member_headers = await token_for(pool, member["id"])
    for path in (f"2fa-enforcements/{run_id}/", "2fa-enforcements/", "2fa-compliance/"):
        response = await client.get(f"/api/0/organizations/acme/{path}", headers=member_headers)
        assert response.status == 403, path
    response = await client.post("/api/0/organizations/acme/2fa-reminders/", headers=member_headers)
    assert response.status == 403

    other_owner, _, other_headers = await owner_org_and_token(
        pool, "other", "other@example.com", has2fa=True
    )
    for run in (run_id, "999999", "nope"):
        response = await client.get(
            f"/api/0/organizations/other/2fa-enforcements/{run}/", headers=other_headers
        )
        assert response.status == 404


async def test_reminders_once_a_day(client, pool, broker, worker) -> None:
    org, headers = await org_with_owner(pool)
    for i in range(3):
        user = await create_user(pool, f"user{i}@example.com", has2fa=i == 0)
        await add_member(pool, org["id"], user)
    for _ in range(2):
        response = await client.post("/api/0/organizations/acme/2fa-reminders/", headers=headers)
        assert response.status == 202
        assert (await response.json())["detail"]
        await settle_enforcement(pool, broker, timeout=30)
    async with pool.acquire() as conn:
        rows = await conn.fetch("select * from email_outbox order by id")
    assert {r["to_address"] for r in rows} == {"user1@example.com", "user2@example.com"}
    assert all(r["template"] == "reminder_2fa" for r in rows)
    assert rows[0]["context"] == {
        "org_name": "Acme",
        "org_slug": "acme",
        "security_url": "http://testserver/account/security/",
    }
    assert rows[0]["dedupe_key"].startswith(f"reminder:{org['id']}:")


async def test_turning_it_off_mid_run_through_the_api(client, pool, settings, broker) -> None:
    """Off while batches are waiting: those batches remove nobody."""
    owner = await create_user(pool, "owner@big.test", has2fa=True)
    async with pool.acquire() as conn:
        await seed(
            conn, settings, slug="big", count=2_500, enrolled=0.5, owner_email=owner["email"]
        )
    headers = await token_for(pool, owner["id"])
    response = await client.put(
        "/api/0/organizations/big/", json={"require2FA": True}, headers=headers
    )
    run_id = int((await response.json())["enforcement"]["id"])
    sent: list[tuple[int, int]] = []
    await coordinate_run(pool, run_id, send=lambda *a: sent.append(a))
    first = await remove_batch_now(pool, settings, run_id, 0)
    off = await client.put("/api/0/organizations/big/", json={"require2FA": False}, headers=headers)
    assert off.status == 200
    for _, batch_no in sent[1:]:
        assert await remove_batch_now(pool, settings, run_id, batch_no) is None
    detail = await client.get(
        f"/api/0/organizations/big/2fa-enforcements/{run_id}/", headers=headers
    )
    run = await detail.json()
    assert run["status"] == "cancelled" and run["removed"] == first.removed
    async with pool.acquire() as conn:
        pending = await conn.fetchval("select count(*) from members where pending_reason = '2fa'")
        org_id = await conn.fetchval("select id from organizations where slug = 'big'")
        left = await counts.count_noncompliant(conn, org_id, except_user_id=owner["id"])
    assert pending == first.removed and left > 0
