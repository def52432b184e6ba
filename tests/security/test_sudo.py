"""Re-authentication before sensitive changes (docs/SECURITY.md, "sudo mode"): within 10 minutes of
a password or second-factor check in a cookie session, else 401 `sudo-required`; bearer tokens
are not subject to it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.factories import (
    PASSWORD,
    create_org,
    create_user,
    enroll_totp,
    owner_and_org,
    sign_in,
    token_for,
    totp_code,
)
from tests.security.helpers import age_reauthentication

SUDO = "/api/0/auth/sudo/"
FACTORS = "/api/0/users/me/authenticators/"
REGENERATE = FACTORS + "recovery/regenerate/"
TOKENS = "/api/0/api-tokens/"


async def _sudo_required(response) -> None:
    assert response.status == 401, await response.text()
    body = await response.json()
    assert body["code"] == "sudo-required" and body["detail"]


async def _ada_with_totp(client) -> str:
    created = await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert created.status == 201
    return await enroll_totp(client)


async def _totp_id(client) -> str:
    factors = await (await client.get(FACTORS)).json()
    return next(f["id"] for f in factors if f["type"] == "totp")


async def test_each_sensitive_change_needs_a_recent_check(client, pool) -> None:
    await _ada_with_totp(client)
    await age_reauthentication(pool)
    await _sudo_required(await client.post(TOKENS, json={"name": "ci"}))
    await _sudo_required(await client.post(REGENERATE, json={}))
    await _sudo_required(await client.delete(f"{FACTORS}{await _totp_id(client)}/"))
    # Reading is not sensitive.
    assert (await client.get(FACTORS)).status == 200

    confirmed = await client.post(SUDO, json={"password": PASSWORD})
    assert confirmed.status == 200, await confirmed.text()
    assert "sudoUntil" in await confirmed.json()
    assert (await client.post(TOKENS, json={"name": "ci"})).status == 201
    assert (await client.post(REGENERATE, json={})).status == 200
    assert (await client.delete(f"{FACTORS}{await _totp_id(client)}/")).status == 204


async def test_signing_in_counts_as_a_check_for_ten_minutes(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    assert (await client.post(TOKENS, json={})).status == 201
    await age_reauthentication(pool, 590)
    assert (await client.post(TOKENS, json={})).status == 201
    await age_reauthentication(pool, 601)
    await _sudo_required(await client.post(TOKENS, json={}))


async def test_a_code_confirms_too_and_wrong_ones_do_not(client, pool) -> None:
    secret = await _ada_with_totp(client)
    await age_reauthentication(pool)
    wrong = await client.post(SUDO, json={"password": "not the password"})
    await _sudo_required(wrong)
    bad_code = f"{(int(totp_code(secret, 1)) + 1) % 10**6:06d}"
    await _sudo_required(await client.post(SUDO, json={"otp": bad_code}))
    await _sudo_required(await client.post(TOKENS, json={}))
    assert (await client.post(SUDO, json={"otp": totp_code(secret, 1)})).status == 200
    assert (await client.post(TOKENS, json={})).status == 201


async def test_sudo_needs_one_proof_and_a_full_session(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    assert (await client.post(SUDO, json={"password": PASSWORD})).status == 401
    assert (await sign_in(client, "ada@example.com")).status == 200
    assert (await client.post(SUDO, json={})).status == 400
    both = await client.post(SUDO, json={"password": PASSWORD, "otp": "123456"})
    assert both.status == 400


async def test_wrong_passwords_count_against_the_sign_in_limit(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    for _ in range(10):
        await _sudo_required(await client.post(SUDO, json={"password": "guess"}))
    limited = await client.post(SUDO, json={"password": PASSWORD})
    assert limited.status == 429 and "Retry-After" in limited.headers


async def test_bearer_tokens_are_not_subject_to_it(client, pool) -> None:
    user = await create_user(pool, "ada@example.com")
    headers = await token_for(pool, user["id"])
    assert (await client.post(TOKENS, json={}, headers=headers)).status == 201
    assert (await client.post(SUDO, json={"password": PASSWORD}, headers=headers)).status == 400


async def test_turning_the_requirement_off(client, pool) -> None:
    await _ada_with_totp(client)
    async with pool.acquire() as conn:
        ada_id = await conn.fetchval("select id from users where email = 'ada@example.com'")
    org = await create_org(pool, "acme", ada_id)
    manager = await create_user(pool, "manager@example.com", has2fa=True)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true where id = $1", org["id"])
        await conn.execute(
            """insert into members (organization_id, user_id, email, role)
               values ($1, $2, 'manager@example.com', 'manager')""",
            org["id"],
            manager["id"],
        )
    await age_reauthentication(pool)
    url = "/api/0/organizations/acme/"
    await _sudo_required(await client.put(url, json={"require2FA": False}))
    await _sudo_required(await client.put(url, json={"ssoEnabled": True}))
    # Turning it on (or renaming) is not a lowering of protection.
    assert (await client.put(url, json={"name": "Acme Inc"})).status == 200
    assert (await client.post(SUDO, json={"password": PASSWORD})).status == 200
    turned = await client.put(url, json={"require2FA": False})
    assert turned.status == 200 and (await turned.json())["require2FA"] is False


async def test_cancelling_or_postponing_a_scheduled_requirement(client, pool) -> None:
    await _ada_with_totp(client)
    async with pool.acquire() as conn:
        ada_id = await conn.fetchval("select id from users where email = 'ada@example.com'")
    await create_org(pool, "acme", ada_id)
    url = "/api/0/organizations/acme/"
    in_days = {n: (datetime.now(UTC) + timedelta(days=n)).isoformat() for n in (2, 3, 5)}
    scheduled = await client.put(url, json={"require2FA": True, "enforceAt": in_days[3]})
    assert scheduled.status == 200, await scheduled.text()
    await age_reauthentication(pool)

    # Each of these leaves the members unprotected for longer: off, SSO, a later date.
    await _sudo_required(await client.put(url, json={"require2FA": False}))
    await _sudo_required(await client.put(url, json={"ssoEnabled": True}))
    await _sudo_required(await client.put(url, json={"require2FA": True, "enforceAt": in_days[5]}))
    seen = await (await client.get(url)).json()
    assert seen["enforceAt"] == in_days[3] and seen["ssoEnabled"] is False

    # An earlier date asks more of them, not less.
    sooner = await client.put(url, json={"require2FA": True, "enforceAt": in_days[2]})
    assert sooner.status == 200 and (await sooner.json())["enforceAt"] == in_days[2]

    assert (await client.post(SUDO, json={"password": PASSWORD})).status == 200
    off = await client.put(url, json={"require2FA": False})
    assert off.status == 200 and (await off.json())["enforceAt"] is None
    async with pool.acquire() as conn:
        statuses = await conn.fetch("select status from enforcement_runs order by id")
    assert [r["status"] for r in statuses] == ["cancelled", "cancelled"]


async def test_the_settings_page_asks_before_cancelling_a_schedule(client, pool) -> None:
    await _ada_with_totp(client)
    async with pool.acquire() as conn:
        ada_id = await conn.fetchval("select id from users where email = 'ada@example.com'")
    await create_org(pool, "acme", ada_id)
    when = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    scheduled = await client.put(
        "/api/0/organizations/acme/", json={"require2FA": True, "enforceAt": when}
    )
    assert scheduled.status == 200, await scheduled.text()
    await age_reauthentication(pool)
    off = {"require2FA": "off", "confirmed": "yes"}  # past the page's own confirm step
    asked = await client.post("/organizations/acme/settings/", data=off)
    assert asked.status == 401 and "Confirm it is you" in await asked.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select status from enforcement_runs") == "scheduled"


async def test_a_manager_gets_403_not_a_sudo_prompt(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    manager = await create_user(pool, "manager@example.com", has2fa=True)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true where id = $1", org["id"])
        await conn.execute(
            """insert into members (organization_id, user_id, email, role)
               values ($1, $2, 'manager@example.com', 'manager')""",
            org["id"],
            manager["id"],
        )
    headers = await token_for(pool, manager["id"])
    refused = await client.put(
        "/api/0/organizations/acme/", json={"require2FA": False}, headers=headers
    )
    assert refused.status == 403


async def test_the_settings_page_asks_inline_and_continues(client, pool) -> None:
    await _ada_with_totp(client)
    async with pool.acquire() as conn:
        ada_id = await conn.fetchval("select id from users where email = 'ada@example.com'")
    org = await create_org(pool, "acme", ada_id)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true where id = $1", org["id"])
    await age_reauthentication(pool)
    page_url = "/organizations/acme/settings/"
    off = {"require2FA": "off", "confirmed": "yes"}  # past the page's own confirm step
    asked = await client.post(page_url, data=off)
    page = await asked.text()
    assert asked.status == 401 and "Confirm it is you" in page
    assert 'name="require2FA" value="off"' in page and 'name="sudo_password"' in page
    assert 'name="sudo_otp"' in page

    wrong = await client.post(page_url, data={**off, "sudo_password": "nope"})
    assert wrong.status == 401 and "Invalid password." in await wrong.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select require_2fa from organizations")

    done = await client.post(
        page_url, data={**off, "sudo_password": PASSWORD}, allow_redirects=False
    )
    assert done.status == 303, await done.text()
    async with pool.acquire() as conn:
        assert not await conn.fetchval("select require_2fa from organizations")
    assert re.search(r"Currently: <strong>Off", await (await client.get(page_url)).text())
