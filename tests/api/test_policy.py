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


async def test_scope_by_role_removes_only_those_roles(client, pool, settings, broker) -> None:
    headers, people = await acme(pool)
    changed = await client.put(
        ORG,
        json={"require2FA": True, "require2FAScope": {"roles": ["admin", "billing"]}},
        headers=headers,
    )
    body = await run_to_the_end(pool, settings, changed)
    assert body["require2FAScope"] == {"roles": ["admin", "billing"], "teams": []}
    assert await states(client, headers) == {
        "owner": "active",
        "admin": "pending",
        "backend": "active",
        "web": "active",
        "billing": "pending",
    }
    # Out of scope: still let in without a factor; in scope: refused.
    backend = await token_for(pool, people["backend"][0]["id"])
    assert (await client.get(ORG, headers=backend)).status == 200
    async with pool.acquire() as conn:
        edits = await conn.fetch("select data from audit_log where event = 'org.edit' order by id")
    assert {"require_2fa_scope": {"roles": ["admin", "billing"], "teams": []}} in [
        e["data"] for e in edits
    ]
    shown = await (await client.get(ORG, headers=headers)).json()
    assert (shown["require2FAScope"], shown["require2FAAction"]) == (
        {"roles": ["admin", "billing"], "teams": []},
        "remove",
    )


async def test_scope_by_team_blocks_only_that_team_and_widening_starts_a_run(
    client, pool, settings, broker
) -> None:
    headers, people = await acme(pool)
    first = await run_to_the_end(
        pool,
        settings,
        await client.put(
            ORG,
            json={
                "require2FA": True,
                "require2FAScope": {"teams": ["backend"]},
                "require2FAAction": "block",
            },
            headers=headers,
        ),
    )
    assert first["require2FAAction"] == "block"
    assert {n for n, s in (await states(client, headers)).items() if s == "blocked"} == {"backend"}
    web = await token_for(pool, people["web"][0]["id"])
    assert (await client.get(ORG, headers=web)).status == 200

    # Widening to the web team too: a run for those newly in scope.
    widened = await client.put(
        ORG, json={"require2FAScope": {"teams": ["backend", "web"]}}, headers=headers
    )
    second = await run_to_the_end(pool, settings, widened)
    assert second["enforcement"]["id"] != first["enforcement"]["id"]
    assert {n for n, s in (await states(client, headers)).items() if s == "blocked"} == {
        "backend",
        "web",
    }
    assert (await client.get(ORG, headers=web)).status == 401
    assert len(await events(pool, "member.blocked")) == 2  # backend was not blocked twice


async def test_scope_refusals_and_narrowing_needs_sudo(client, pool) -> None:
    headers, _ = await acme(pool)
    for scope, word in (
        ({"roles": ["wizard"]}, "wizard"),
        ({"teams": ["nope"]}, "nope"),
        ({"roles": [], "teams": []}, "at least one"),
    ):
        refused = await client.put(ORG, json={"require2FAScope": scope}, headers=headers)
        body = await refused.json()
        assert refused.status == 400 and word in body["errors"]["require2FAScope"][0], body
    wrong = await client.put(ORG, json={"require2FAAction": "shame"}, headers=headers)
    assert wrong.status == 400


async def test_narrowing_the_scope_needs_a_recent_sign_in_and_lets_the_blocked_in(
    client, pool, settings, broker
) -> None:
    from tests.factories import PASSWORD
    from tests.security.helpers import age_reauthentication

    registered = await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    await enroll_totp(client)
    org = await create_org(pool, "acme", int((await registered.json())["id"]), teams=("web",))
    user = await create_user(pool, "web@example.com")
    member_id = await add_member(pool, org["id"], user, teams=("web",))
    body = {"require2FA": True, "require2FAAction": "block"}
    await run_to_the_end(pool, settings, await client.put(ORG, json=body))
    web = await token_for(pool, user["id"])
    assert (await client.get(ORG, headers=web)).status == 401

    await age_reauthentication(pool)
    narrowed = await client.put(ORG, json={"require2FAScope": {"roles": ["owner"]}})
    assert narrowed.status == 401 and (await narrowed.json())["code"] == "sudo-required"
    assert (await client.post("/api/0/auth/sudo/", json={"password": PASSWORD})).status == 200
    narrowed = await client.put(ORG, json={"require2FAScope": {"roles": ["owner"]}})
    assert narrowed.status == 200 and "enforcement" not in await narrowed.json()
    # Out of scope now: let in, audited, in the same change.
    assert (await client.get(ORG, headers=web)).status == 200
    assert await events(pool, "member.unblocked") == [
        {"member": member_id, "email": "web@example.com", "reason": "out-of-scope"}
    ]


async def test_the_last_qualifying_factor_stays_at_its_level_and_in_scope(client, pool) -> None:
    from require2fa.factors import last_factor

    headers, _ = await acme(pool)
    user = await create_user(pool, "both@example.com")
    app_id = await add_factor(pool, user["id"], "totp")
    phone_id = await add_factor(pool, user["id"], "sms")
    async with pool.acquire() as conn:
        org_id = await conn.fetchval("select id from organizations where slug = 'acme'")
        await conn.execute(
            "update organizations set require_2fa = true, require_2fa_level = 'secure'"
        )
    await add_member(pool, org_id, user, teams=("web",))
    mine = await token_for(pool, user["id"])
    # Removing the app would leave only a phone, which `secure` does not accept.
    refused = await client.delete(f"/api/0/users/me/authenticators/{app_id}/", headers=mine)
    detail = (await refused.json())["detail"]
    assert refused.status == 403 and detail == last_factor("Acme", "secure")
    assert "Acme" in detail and "secure" in detail
    # Out of the scope, the organization needs nothing of them.
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa_scope_teams = '{backend}'")
    assert (
        await client.delete(f"/api/0/users/me/authenticators/{app_id}/", headers=mine)
    ).status == 204
    # At phishing-resistant with the user in scope (their team), the only key stays.
    key_id = await add_factor(pool, user["id"], "webauthn")
    async with pool.acquire() as conn:
        await conn.execute(
            """update organizations set require_2fa_level = 'phishing-resistant',
                                        require_2fa_scope_teams = '{web}'"""
        )
    refused = await client.delete(f"/api/0/users/me/authenticators/{key_id}/", headers=mine)
    assert refused.status == 403
    assert (await refused.json())["detail"] == last_factor("Acme", "phishing-resistant")
    # The phone does not count at that level: it may go.
    assert (
        await client.delete(f"/api/0/users/me/authenticators/{phone_id}/", headers=mine)
    ).status == 204


async def test_moving_into_scope_is_refused_until_the_member_meets_it(client, pool) -> None:
    headers, people = await acme(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            """update organizations set require_2fa = true,
                                        require_2fa_scope_roles = '{admin}',
                                        require_2fa_scope_teams = '{backend}'"""
        )
    _, web_id = people["web"]
    for change in ({"role": "admin"}, {"teams": ["web", "backend"]}):
        refused = await client.put(f"{ORG}members/{web_id}/", json=change, headers=headers)
        body = await refused.json()
        assert refused.status == 409, body
        assert "web@example.com" in body["detail"] and "Acme" in body["detail"]
    member = await (await client.get(f"{ORG}members/{web_id}/", headers=headers)).json()
    assert (member["role"], member["teams"]) == ("member", ["web"])
    # A change that stays out of scope goes through; so does one for a member who meets it.
    moved = await client.put(f"{ORG}members/{web_id}/", json={"role": "billing"}, headers=headers)
    assert moved.status == 200
    await add_factor(pool, people["web"][0]["id"], "totp")
    moved = await client.put(f"{ORG}members/{web_id}/", json={"role": "admin"}, headers=headers)
    assert moved.status == 200 and (await moved.json())["role"] == "admin"


async def test_counts_preview_and_joins_follow_the_scope(client, pool) -> None:
    from tests.factories import link_in

    headers, people = await acme(pool)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa_scope_teams = '{web}'")
    listed = await (await client.get(ORG + "2fa-compliance/", headers=headers)).json()
    assert listed["count"] == 1
    assert [m["email"] for m in listed["members"]] == ["web@example.com"]

    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true")
    # An invitee out of scope joins without a factor; one into the scoped team must set it up.
    for email, teams, needs in (("out@example.com", [], False), ("in@example.com", ["web"], True)):
        invited = await client.post(
            ORG + "members/",
            json={"email": email, "role": "member", "teams": teams},
            headers=headers,
        )
        assert invited.status == 201, await invited.text()
        newcomer = await create_user(pool, email)
        async with pool.acquire() as conn:
            sealed = await conn.fetchval(
                "select context->>'accept_url_sealed' from email_outbox where to_address = $1",
                email,
            )
        path = "/api/0/accept-invite/" + link_in(sealed).split("/accept/", 1)[1]
        theirs = await token_for(pool, newcomer["id"])
        assert (await (await client.get(path, headers=theirs)).json())["needs2fa"] is needs
        joined = await client.post(path, headers=theirs)
        assert joined.status == (403 if needs else 200), await joined.text()


async def test_a_reset_in_an_organization_that_blocks_blocks_the_member(client, pool) -> None:
    headers, people = await acme(pool)
    user, member_id = people["web"]
    await add_factor(pool, user["id"], "totp")
    await set_action(pool, "block")
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true")
    reset = await client.post(f"{ORG}members/{member_id}/reset-2fa/", headers=headers)
    body = await reset.json()
    assert reset.status == 200, body
    assert body["member"]["blocked"] is True and body["member"]["pending"] is False
    assert [e["member"] for e in await events(pool, "member.blocked")] == [member_id]
    async with pool.acquire() as conn:
        mailed = await conn.fetchval(
            "select count(*) from email_outbox where template = 'blocked_for_2fa'"
        )
    assert mailed == 1


async def test_block_to_remove_removes_the_blocked_and_remove_to_block_keeps_pending(
    client, pool, settings, broker
) -> None:
    headers, people = await acme(pool)
    await run_to_the_end(
        pool,
        settings,
        await client.put(
            ORG,
            json={"require2FA": True, "require2FAAction": "block", "require2FAScope": None},
            headers=headers,
        ),
    )
    assert set((await states(client, headers)).values()) == {"active", "blocked"}
    switched = await client.put(ORG, json={"require2FAAction": "remove"}, headers=headers)
    body = await run_to_the_end(pool, settings, switched)
    assert body["require2FAAction"] == "remove"
    assert await states(client, headers) == {
        "owner": "active",
        "admin": "pending",
        "backend": "pending",
        "web": "pending",
        "billing": "pending",
    }
    pending = await (await client.get(ORG + "members/?query=is:pending", headers=headers)).json()
    assert all(m["reinstateBy"] and not m["blocked"] for m in pending)
    web = next(m for m in pending if m["email"] == "web@example.com")
    assert (web["role"], web["teams"]) == ("member", ["web"])
    assert len(await events(pool, "member.pending")) == 4
    async with pool.acquire() as conn:
        edits = await conn.fetch("select data from audit_log where event = 'org.edit' order by id")
    assert {"require_2fa_action": "to remove"} in [e["data"] for e in edits]

    # Back to block: nothing runs, the pending stay pending.
    again = await client.put(ORG, json={"require2FAAction": "block"}, headers=headers)
    assert again.status == 200 and "enforcement" not in await again.json()
    assert set((await states(client, headers)).values()) == {"active", "pending"}


async def test_turning_it_off_lets_the_blocked_in_and_pages_refuse_them_meanwhile(
    client, pool, settings, broker
) -> None:
    from tests.factories import PASSWORD, sign_in
    from tests.security.helpers import cookie_of, use_cookie

    registered = await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    await enroll_totp(client)
    org = await create_org(pool, "acme", int((await registered.json())["id"]))
    user = await create_user(pool, "bob@example.com")
    member_id = await add_member(pool, org["id"], user)
    body = {"require2FA": True, "require2FAAction": "block"}
    await run_to_the_end(pool, settings, await client.put(ORG, json=body))

    # Bob, blocked, signs in: the organization's page refuses him and says what to do.
    ada_cookie = cookie_of(client)
    client.session.cookie_jar.clear()
    assert (await sign_in(client, "bob@example.com")).status == 200
    page = await client.get("/organizations/acme/")
    assert "Acme requires two-factor authentication" in await page.text()
    assert (await client.get("/organizations/acme/members/")).status == 401
    bob_cookie = cookie_of(client)

    # Ada turns the requirement off (after re-authenticating): Bob is let in, audited.
    use_cookie(client, ada_cookie)
    assert (await client.post("/api/0/auth/sudo/", json={"password": PASSWORD})).status == 200
    off = await client.put(ORG, json={"require2FA": False})
    assert off.status == 200, await off.text()
    assert await events(pool, "member.unblocked") == [
        {"member": member_id, "email": "bob@example.com", "reason": "requirement-off"}
    ]
    use_cookie(client, bob_cookie)
    page = await client.get("/organizations/acme/")
    assert "Acme requires two-factor authentication" not in await page.text()
    assert (await client.get("/organizations/acme/members/")).status == 200


async def test_the_settings_page_chooses_the_action_and_scope_with_a_count_that_follows(
    client, pool, settings, broker
) -> None:
    from tests.factories import PASSWORD

    registered = await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    await enroll_totp(client)
    org = await create_org(pool, "acme", int((await registered.json())["id"]), teams=("web", "ops"))
    for name, teams in (("web1", ("web",)), ("web2", ("web",)), ("ops1", ("ops",))):
        await add_member(
            pool, org["id"], await create_user(pool, f"{name}@example.com"), teams=teams
        )
    url = "/organizations/acme/settings/"
    page = await (await client.get(url)).text()
    assert 'name="require2FAAction"' in page and 'name="scopeTeam-web"' in page
    form = {
        "require2FA": "on",
        "require2FALevel": "any",
        "require2FAAction": "block",
        "scopeWho": "some",
        "scopeTeam-web": "on",
    }
    asked = await (await client.post(url, data=form)).text()
    assert "<strong>2 members</strong>" in asked and 'name="scopeTeam-web" value="on"' in asked
    done = await client.post(url, data={**form, "confirmed": "yes", "when": "now"})
    assert done.status == 200, await done.text()
    shown = await (await client.get(ORG)).json()
    assert shown["require2FA"] is True and shown["require2FAAction"] == "block"
    assert shown["require2FAScope"] == {"roles": [], "teams": ["web"]}
    refused = await client.post(url, data={"scopeWho": "some", "require2FALevel": "any"})
    assert refused.status == 400 and "at least one role or team" in await refused.text()
