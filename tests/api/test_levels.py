"""The requirement level (`require2FALevel`: any | secure | phishing-resistant) through the API:
what counts, who is removed and why, what they are told, and what raising or lowering it does."""

from __future__ import annotations

import pytest

from jobs.enforcement import coordinate_run, remove_batch_now
from require2fa import compliance
from require2fa.factors import last_factor
from tests.factories import add_member, create_org, create_user, link_in, token_for
from tests.softkey import SoftKey

ORG = "/api/0/organizations/acme/"


async def add_factor(pool, user_id: int, kind: str) -> int:
    """A confirmed factor of `kind` (not usable for signing in: tests of that enroll for real)."""
    key = SoftKey()
    async with pool.acquire() as conn:
        return await conn.fetchval(
            """insert into authenticators (user_id, type, name, secret_encrypted, phone,
                                           credential_id, public_key, sign_count, confirmed_at)
               values ($1, $2, $2, case when $2 = 'totp' then 'x'::bytea end,
                       case when $2 = 'sms' then '+14155550123' end,
                       case when $2 = 'webauthn' then $3::bytea end,
                       case when $2 = 'webauthn' then $4::bytea end,
                       case when $2 = 'webauthn' then 0 end, now())
               returning id""",
            user_id,
            kind,
            key.credential_id,
            key.cose_public_key(),
        )


async def acme(pool, owner_kinds=("webauthn",)):
    """Acme, its owner (with factors of `owner_kinds`) and members with: nothing, an app, a
    phone, a key. Returns the owner's headers and {kind: (user, member_id)}."""
    owner = await create_user(pool, "owner@example.com")
    for kind in owner_kinds:
        await add_factor(pool, owner["id"], kind)
    org = await create_org(pool, "acme", owner["id"], teams=("backend",))
    people = {}
    for kind in ("none", "totp", "sms", "webauthn"):
        user = await create_user(pool, f"{kind}@example.com")
        if kind != "none":
            await add_factor(pool, user["id"], kind)
        people[kind] = (user, await add_member(pool, org["id"], user, teams=("backend",)))
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


def test_levels_are_data() -> None:
    assert list(compliance.LEVELS) == ["any", "secure", "phishing-resistant"]
    assert compliance.meets_requirement(["sms"], "any")
    assert not compliance.meets_requirement(["sms"], "secure")
    assert compliance.meets_requirement(["totp"], "secure")
    assert not compliance.meets_requirement(["totp", "sms"], "phishing-resistant")
    assert compliance.meets_requirement(["webauthn"], "phishing-resistant")
    assert compliance.is_stricter("secure", "any") and not compliance.is_stricter("any", "secure")
    assert "security key" in compliance.needs("phishing-resistant")


@pytest.mark.parametrize(
    ("level", "removed"),
    [
        ("any", {"none"}),
        ("secure", {"none", "sms"}),
        ("phishing-resistant", {"none", "sms", "totp"}),
    ],
)
async def test_compliance_and_enforcement_follow_the_level(
    client, pool, settings, broker, mailbox, level, removed
) -> None:
    headers, people = await acme(pool)
    compliance_list = await client.get(ORG + "2fa-compliance/", headers=headers)
    assert (await compliance_list.json())["count"] == 1  # `any` until the level is set

    changed = await client.put(ORG, json={"require2FALevel": level}, headers=headers)
    body = await changed.json()
    assert changed.status == 200 and body["require2FALevel"] == level
    assert "enforcement" not in body  # not required yet: nothing runs
    listed = await (await client.get(ORG + "2fa-compliance/", headers=headers)).json()
    assert listed["count"] == len(removed)
    assert {m["email"].split("@")[0] for m in listed["members"]} == removed

    await run_to_the_end(
        pool, settings, await client.put(ORG, json={"require2FA": True}, headers=headers)
    )
    pending = await (await client.get(ORG + "members/?query=is:pending", headers=headers)).json()
    reasons = {m["email"].split("@")[0]: m["pendingReason"] for m in pending}
    assert reasons == {kind: "2fa" if kind == "none" else "2fa-level" for kind in removed}
    async with pool.acquire() as conn:
        logged = await conn.fetch(
            "select data from audit_log where event = 'member.pending' order by id"
        )
        emails = await conn.fetch(
            "select to_address, context from email_outbox where template = 'removed_for_2fa'"
        )
    assert sorted(r["data"]["reason"] for r in logged) == sorted(reasons.values())
    assert len(emails) == len(removed)
    for row in emails:
        assert row["context"]["level"] == level
        assert row["context"]["needs"] == compliance.needs(level)


async def test_raising_the_level_starts_a_run_and_lowering_does_not(
    client, pool, settings, broker
) -> None:
    headers, people = await acme(pool)
    first = await run_to_the_end(
        pool, settings, await client.put(ORG, json={"require2FA": True}, headers=headers)
    )
    raised = await client.put(ORG, json={"require2FALevel": "secure"}, headers=headers)
    body = await run_to_the_end(pool, settings, raised)
    assert body["enforcement"]["id"] != first["enforcement"]["id"]
    async with pool.acquire() as conn:
        edits = await conn.fetch("select data from audit_log where event = 'org.edit' order by id")
        pending = await conn.fetch(
            "select email, removal_reason from members where pending_reason = '2fa' order by email"
        )
    assert [e["data"] for e in edits] == [
        {"require_2fa": "to True"},
        {"require_2fa_level": "to secure"},
    ]
    assert [(p["email"], p["removal_reason"]) for p in pending] == [
        ("none@example.com", "2fa"),
        ("sms@example.com", "2fa-level"),
    ]

    lowered = await client.put(ORG, json={"require2FALevel": "any"}, headers=headers)
    assert lowered.status == 200
    assert "enforcement" not in await lowered.json()
    assert (await lowered.json())["require2FALevel"] == "any"


async def test_level_refusals(client, pool) -> None:
    headers, people = await acme(pool, owner_kinds=("totp",))
    bad = await client.put(ORG, json={"require2FALevel": "strict"}, headers=headers)
    assert bad.status == 400 and "require2FALevel" in (await bad.json())["errors"]
    member_headers = await token_for(pool, people["webauthn"][0]["id"])
    not_owner = await client.put(ORG, json={"require2FALevel": "secure"}, headers=member_headers)
    assert not_owner.status == 403
    # The owner must meet the level they require.
    short = await client.put(
        ORG, json={"require2FA": True, "require2FALevel": "phishing-resistant"}, headers=headers
    )
    assert short.status == 400 and "security key" in (await short.json())["detail"]
    async with pool.acquire() as conn:
        org = await conn.fetchrow("select * from organizations where slug = 'acme'")
        runs = await conn.fetchval("select count(*) from enforcement_runs")
    assert (org["require_2fa"], org["require_2fa_level"], runs) == (False, "any", 0)


async def test_the_ongoing_check_and_joins_follow_the_level(client, pool) -> None:
    headers, people = await acme(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "update organizations set require_2fa = true, require_2fa_level = 'phishing-resistant'"
        )
    totp_headers = await token_for(pool, people["totp"][0]["id"])
    refused = await client.get(ORG, headers=totp_headers)
    body = await refused.json()
    assert refused.status == 401 and body["code"] == "2fa-required"
    assert body["require2FALevel"] == "phishing-resistant" and "security key" in body["detail"]
    key_headers = await token_for(pool, people["webauthn"][0]["id"])
    assert (await client.get(ORG, headers=key_headers)).status == 200

    # An invitee with only an app cannot join until they add a key.
    invited = await client.post(
        ORG + "members/", json={"email": "new@example.com", "role": "member"}, headers=headers
    )
    assert invited.status == 201, await invited.text()
    newcomer = await create_user(pool, "new@example.com")
    await add_factor(pool, newcomer["id"], "totp")
    async with pool.acquire() as conn:
        member_id = await conn.fetchval("select id from members where email = 'new@example.com'")
        accept_url = link_in(
            await conn.fetchval(
                "select context->>'accept_url_sealed' from email_outbox where template = 'invite'"
            )
        )
    path = "/api/0/accept-invite/" + accept_url.split("/accept/", 1)[1]
    new_headers = await token_for(pool, newcomer["id"])
    look = await (await client.get(path, headers=new_headers)).json()
    assert look["needs2fa"] is True and look["require2FALevel"] == "phishing-resistant"
    join = await client.post(path, headers=new_headers)
    assert join.status == 403 and (await join.json())["code"] == "2fa-required"
    await add_factor(pool, newcomer["id"], "webauthn")
    assert (await (await client.get(path, headers=new_headers)).json())["needs2fa"] is False
    joined = await client.post(path, headers=new_headers)
    assert joined.status == 200, await joined.text()
    assert int((await joined.json())["memberId"]) == member_id


async def test_the_last_accepted_factor_stays(client, pool) -> None:
    headers, _ = await acme(pool)
    user = await create_user(pool, "both@example.com")
    key_id = await add_factor(pool, user["id"], "webauthn")
    app_id = await add_factor(pool, user["id"], "totp")
    async with pool.acquire() as conn:
        org_id = await conn.fetchval("select id from organizations where slug = 'acme'")
        await conn.execute(
            "update organizations set require_2fa = true, require_2fa_level = 'phishing-resistant'"
        )
    await add_member(pool, org_id, user)
    mine = await token_for(pool, user["id"])
    refused = await client.delete(f"/api/0/users/me/authenticators/{key_id}/", headers=mine)
    assert refused.status == 403 and (await refused.json())["detail"] == last_factor(
        "Acme", "phishing-resistant"
    )
    assert (
        await client.delete(f"/api/0/users/me/authenticators/{app_id}/", headers=mine)
    ).status == 204


async def test_settings_page_chooses_the_level_with_a_count_at_that_level(
    client, pool, broker
) -> None:
    from tests.factories import enroll_totp

    registered = await client.post(
        "/api/0/auth/register/",
        json={"email": "owner@example.com", "password": "correct horse battery staple"},
    )
    owner_id = int((await registered.json())["id"])
    await enroll_totp(client)
    await add_factor(pool, owner_id, "webauthn")
    org = await create_org(pool, "acme", owner_id)
    for kind in ("none", "totp", "sms", "webauthn"):
        user = await create_user(pool, f"{kind}@example.com")
        if kind != "none":
            await add_factor(pool, user["id"], kind)
        await add_member(pool, org["id"], user)
    settings_url = "/organizations/acme/settings/"

    page = await (await client.get(settings_url)).text()
    assert 'name="require2FALevel"' in page and "Phishing-resistant" in page
    asked = await client.post(settings_url, data={"require2FA": "on", "require2FALevel": "secure"})
    page = await asked.text()
    assert "<strong>2 members</strong>" in page and 'name="confirmed" value="yes"' in page
    assert 'name="require2FALevel" value="secure"' in page
    done = await client.post(
        settings_url,
        data={"require2FA": "on", "require2FALevel": "secure", "confirmed": "yes"},
        allow_redirects=False,
    )
    assert done.status == 303
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from organizations where slug = 'acme'")
    assert (row["require_2fa"], row["require_2fa_level"]) == (True, "secure")

    # Raising it asks again, counting at the new level (the app-only member too).
    raised = await client.post(settings_url, data={"require2FALevel": "phishing-resistant"})
    page = await raised.text()
    assert "Raise the requirement level?" in page and "<strong>3 members</strong>" in page
    confirmed = await client.post(
        settings_url,
        data={"require2FALevel": "phishing-resistant", "confirmed": "yes"},
        allow_redirects=False,
    )
    assert confirmed.status == 303
    async with pool.acquire() as conn:
        runs = await conn.fetch("select status from enforcement_runs order by id")
        level = await conn.fetchval("select require_2fa_level from organizations")
    assert level == "phishing-resistant"
    assert [r["status"] for r in runs] == ["cancelled", "queued"]
    bad = await client.post(settings_url, data={"require2FALevel": "nope"})
    assert bad.status == 400
