"""The enforcement policy (CONTRACT §10): whom the requirement applies to (`require2FAScope`),
what a run does to those who do not meet it (`require2FAAction`: remove or block), and the last
factor that an organization's level needs."""

from __future__ import annotations

from jobs.enforcement import coordinate_run, remove_batch_now
from tests.api.test_levels import add_factor
from tests.factories import add_member, create_org, create_user, enroll_totp, token_for

ORG = "/api/0/organizations/acme/"


async def acme(pool, *, teams=("backend", "web")):
    """Acme, its owner (with a security key) and four members without a factor: an admin in
    no team, members in `backend` and in `web`, a billing member in no team. Returns the
    owner's headers and {name: (user, member_id)}."""
    owner = await create_user(pool, "owner@example.com")
    await add_factor(pool, owner["id"], "webauthn")
    org = await create_org(pool, "acme", owner["id"], teams=teams)
    people = {}
    for name, role, in_teams in (
        ("admin", "admin", ()),
        ("backend", "member", ("backend",)),
        ("web", "member", ("web",)),
        ("billing", "billing", ()),
    ):
        user = await create_user(pool, f"{name}@example.com")
        people[name] = (user, await add_member(pool, org["id"], user, role=role, teams=in_teams))
    return await token_for(pool, owner["id"]), people


async def run_to_the_end(pool, settings, response) -> dict:
    body = await response.json()
    assert response.status == 200, body
    run_id = int(body["enforcement"]["id"])
    sent: list[tuple[int, int]] = []
    await coordinate_run(pool, run_id, send=lambda *a: sent.append(a))
    for _, batch_no in sent:
        await remove_batch_now(pool, settings, run_id, batch_no)
    return body


async def states(client, headers) -> dict[str, str]:
    """{name: pending | blocked | active} as the members list shows them."""
    listed = await (await client.get(ORG + "members/", headers=headers)).json()
    return {
        m["email"].split("@")[0]: "pending"
        if m["pending"]
        else ("blocked" if m["blocked"] else "active")
        for m in listed
    }


async def events(pool, event: str) -> list[dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select target_member_id, data from audit_log where event = $1 order by id", event
        )
    return [{"member": r["target_member_id"], **r["data"]} for r in rows]


async def set_action(pool, action: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa_action = $1", action)


async def test_block_keeps_members_and_lets_them_in_the_moment_they_enroll(
    client, pool, settings, broker
) -> None:
    headers, people = await acme(pool)
    await set_action(pool, "block")
    body = await run_to_the_end(
        pool, settings, await client.put(ORG, json={"require2FA": True}, headers=headers)
    )
    assert await states(client, headers) == {
        "owner": "active",
        "admin": "blocked",
        "backend": "blocked",
        "web": "blocked",
        "billing": "blocked",
    }
    blocked = await (await client.get(ORG + "members/?query=is:blocked", headers=headers)).json()
    assert len(blocked) == 4 and all(m["user"] is not None for m in blocked)
    web = next(m for m in blocked if m["email"] == "web@example.com")
    assert (web["role"], web["teams"], web["pending"]) == ("member", ["web"], False)
    assert len(await events(pool, "member.blocked")) == 4
    assert await events(pool, "member.pending") == []
    async with pool.acquire() as conn:
        emails = await conn.fetch(
            "select to_address, context from email_outbox where template = 'blocked_for_2fa'"
        )
        run = await conn.fetchrow(
            "select status, removed from enforcement_runs where id = $1",
            int(body["enforcement"]["id"]),
        )
    assert sorted(e["to_address"] for e in emails) == [
        f"{n}@example.com" for n in ("admin", "backend", "billing", "web")
    ]
    assert all(e["context"]["security_url"].endswith("/account/security/") for e in emails)
    assert (run["status"], run["removed"]) == ("completed", 4)

    # Blocked: 401 2fa-required on the organization's endpoints, with a token too.
    user, member_id = people["backend"]
    mine = await token_for(pool, user["id"])
    for path in (ORG, ORG + "members/", ORG + "teams/"):
        refused = await client.get(path, headers=mine)
        assert refused.status == 401 and (await refused.json())["code"] == "2fa-required"

    # Setting up an app lets them in at once, with the same role and teams; audited.
    await enroll_totp(client, headers=mine)
    assert (await client.get(ORG, headers=mine)).status == 200
    unblocked = await events(pool, "member.unblocked")
    assert unblocked == [{"member": member_id, "email": "backend@example.com", "reason": "2fa"}]
    assert (await states(client, headers))["backend"] == "active"

    # A second delivery of a batch blocks nobody again and mails nobody twice.
    async with pool.acquire() as conn:
        await conn.execute("update enforcement_batches set done_at = null")
        await conn.execute("update enforcement_runs set status = 'running', batches_done = 0")
    await remove_batch_now(pool, settings, int(body["enforcement"]["id"]), 0)
    assert len(await events(pool, "member.blocked")) == 4
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "select count(*) from email_outbox where template = 'blocked_for_2fa'"
            )
            == 4
        )


async def test_block_has_no_window_and_the_report_says_blocked(
    client, pool, settings, broker
) -> None:
    headers, people = await acme(pool)
    await set_action(pool, "block")
    await run_to_the_end(
        pool, settings, await client.put(ORG, json={"require2FA": True}, headers=headers)
    )
    async with pool.acquire() as conn:
        rows = await conn.fetch("select reinstate_by, pending_reason from members")
    assert all(r["reinstate_by"] is None and r["pending_reason"] is None for r in rows)
    report = await client.get(ORG + "2fa-compliance/?format=csv", headers=headers)
    lines = (await report.text()).splitlines()
    header = lines[0].split(",")
    state = header.index("state")
    by_email = {line.split(",")[0]: line.split(",")[state] for line in lines[1:]}
    assert by_email["web@example.com"] == "blocked"
    assert by_email["owner@example.com"] == "active"
