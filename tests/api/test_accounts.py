"""Accounts through the HTTP API: sessions, the second sign-in step, rate limits, API tokens."""

from __future__ import annotations

import asyncio
import re

import redis.asyncio as aioredis
from structlog.testing import capture_logs

from api.app import create_app
from api.auth import SESSION_COOKIE
from require2fa import ratelimit
from require2fa.accounts import LOGIN_LIMIT
from require2fa.factors import SECOND_FACTOR_HOURLY
from tests.factories import (
    PASSWORD,
    create_user,
    enroll_totp,
    owner_and_org,
    sign_in,
    sign_in_with_totp,
    token_for,
    totp_code,
)

LOGIN = "/api/0/auth/login/"
SECOND = "/api/0/auth/2fa/"
ME = "/api/0/users/me/"


def _session_cookie(response) -> str:
    morsel = response.cookies.get(SESSION_COOKIE)
    assert morsel is not None, "no session cookie set"
    return morsel.value


async def _user_with_totp(client, pool, email: str = "ada@example.com") -> str:
    """A user signed up through the API with TOTP; signed out again. Returns the secret."""
    created = await client.post(
        "/api/0/auth/register/", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert created.status == 201
    secret = await enroll_totp(client)
    await client.post("/api/0/auth/logout/")
    return secret


async def test_register_login_and_cookie_attributes(client, pool) -> None:
    created = await client.post(
        "/api/0/auth/register/",
        json={"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada"},
    )
    assert created.status == 201
    body = await created.json()
    assert body["email"] == "ada@example.com" and body["has2fa"] is False
    morsel = created.cookies[SESSION_COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and not morsel["secure"]
    async with pool.acquire() as conn:
        stored = await conn.fetchval("select password_hash from users")
    assert stored.startswith("$argon2id$")

    dup = await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert dup.status == 409
    await client.post("/api/0/auth/logout/")
    assert (await client.get(ME)).status == 401
    wrong = await sign_in(client, "ada@example.com", "not the password")
    assert wrong.status == 401 and (await wrong.json())["detail"]
    right = await sign_in(client, "ada@example.com")
    assert right.status == 200
    assert (await (await client.get(ME)).json())["email"] == "ada@example.com"


async def test_cookie_is_secure_behind_https(aiohttp_client, settings, pool) -> None:
    secure = await aiohttp_client(create_app(settings.replace(base_url="https://example.com")))
    await create_user(pool, "ada@example.com")
    response = await sign_in(secure, "ada@example.com")
    assert response.status == 200
    assert response.cookies[SESSION_COOKIE]["secure"]


async def test_second_factor_sign_in_rotates_the_session(client, pool) -> None:
    secret = await _user_with_totp(client, pool)
    first = await sign_in(client, "ada@example.com")
    assert first.status == 401
    body = await first.json()
    assert body["2faRequired"] is True and body["interfaces"] == ["recovery", "totp"]
    half_cookie = _session_cookie(first)

    second = await client.post(SECOND, json={"otp": totp_code(secret, 1)})
    assert second.status == 200, await second.text()
    assert (await second.json())["has2fa"] is True
    assert _session_cookie(second) != half_cookie
    me = await client.get(ME)
    assert me.status == 200 and (await me.json())["email"] == "ada@example.com"
    again = await client.post(SECOND, json={"otp": totp_code(secret, 1)})
    assert again.status == 400  # already fully signed in


async def test_half_signed_in_session_is_refused_everywhere_else(client, pool) -> None:
    await _user_with_totp(client, pool)
    owner, _ = await owner_and_org(pool, "acme", "owner@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 401
    for method, path in [
        ("GET", ME),
        ("GET", "/api/0/api-tokens/"),
        ("POST", "/api/0/api-tokens/"),
        ("GET", "/api/0/organizations/"),
        ("POST", "/api/0/organizations/"),
        ("GET", "/api/0/organizations/acme/"),
        ("GET", "/api/0/users/me/authenticators/"),
        ("POST", "/api/0/users/me/authenticators/totp/enroll/"),
        ("POST", "/api/0/users/me/authenticators/recovery/regenerate/"),
        ("DELETE", "/api/0/users/me/authenticators/1/"),
    ]:
        response = await client.request(method, path, json={})
        assert response.status == 401, (method, path, response.status)
        body = await response.json()
        assert body["detail"] and body["2faRequired"] is True, (method, path)
    logout = await client.post("/api/0/auth/logout/")
    assert logout.status == 204
    assert (await client.post(SECOND, json={"otp": "123456"})).status == 401


async def test_second_step_needs_a_half_signed_in_session(client, pool) -> None:
    user = await create_user(pool, "ada@example.com", has2fa=True)
    assert (await client.post(SECOND, json={"otp": "123456"})).status == 401
    headers = await token_for(pool, user["id"])
    assert (await client.post(SECOND, json={"otp": "123456"}, headers=headers)).status == 400


async def test_same_totp_code_refused_the_second_time(client, pool) -> None:
    secret = await _user_with_totp(client, pool)
    code = totp_code(secret, 1)
    assert (await sign_in(client, "ada@example.com")).status == 401
    assert (await client.post(SECOND, json={"otp": code})).status == 200
    await client.post("/api/0/auth/logout/")
    assert (await sign_in(client, "ada@example.com")).status == 401
    replay = await client.post(SECOND, json={"otp": code})
    assert replay.status == 401
    assert (await replay.json())["2faRequired"] is True
    assert (await client.get(ME)).status == 401
    # The code that confirmed the enrollment cannot sign in either.
    assert (await client.post(SECOND, json={"otp": totp_code(secret)})).status == 401


async def test_same_totp_code_in_parallel_passes_once(client, aiohttp_client, pool, settings):
    secret = await _user_with_totp(client, pool)
    other = await aiohttp_client(create_app(settings))  # a second browser
    assert (await sign_in(client, "ada@example.com")).status == 401
    assert (await sign_in(other, "ada@example.com")).status == 401
    code = totp_code(secret, 1)
    responses = await asyncio.gather(
        client.post(SECOND, json={"otp": code}),
        other.post(SECOND, json={"otp": code}),
        client.post(SECOND, json={"otp": code}),
    )
    statuses = sorted(r.status for r in responses)
    assert statuses[0] == 200 and statuses[1:] in ([401, 401], [400, 401]), statuses


async def test_recovery_code_signs_in_once(client, pool) -> None:
    await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    url = "/api/0/users/me/authenticators/totp/enroll/"
    secret = (await (await client.post(url, json={})).json())["secret"]
    enrolled = await client.post(url, json={"secret": secret, "otp": totp_code(secret)})
    codes = (await enrolled.json())["recoveryCodes"]
    await client.post("/api/0/auth/logout/")

    assert (await sign_in(client, "ada@example.com")).status == 401
    used = await client.post(SECOND, json={"otp": codes[0].upper()})
    assert used.status == 200
    listed = await (await client.get("/api/0/users/me/authenticators/")).json()
    assert [a["unusedCodes"] for a in listed if a["type"] == "recovery"] == [9]
    await client.post("/api/0/auth/logout/")

    assert (await sign_in(client, "ada@example.com")).status == 401
    assert (await client.post(SECOND, json={"otp": codes[0]})).status == 401
    statuses = sorted(
        r.status
        for r in await asyncio.gather(
            *(client.post(SECOND, json={"otp": codes[1]}) for _ in range(3))
        )
    )
    assert statuses[0] == 200 and all(s in (400, 401) for s in statuses[1:]), statuses
    async with pool.acquire() as conn:
        spent = await conn.fetchval("select count(*) from recovery_codes where used_at is not null")
    assert spent == 2


async def test_sixth_wrong_code_within_20_seconds_is_429(client, pool) -> None:
    secret = await _user_with_totp(client, pool)
    assert (await sign_in(client, "ada@example.com")).status == 401
    good = totp_code(secret, 1)
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    for _ in range(5):
        assert (await client.post(SECOND, json={"otp": wrong})).status == 401
    limited = await client.post(SECOND, json={"otp": wrong})
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["detail"]
    # Even the right code waits: counting happens before checking.
    assert (await client.post(SECOND, json={"otp": good})).status == 429


async def test_twenty_attempts_an_hour(client, pool, settings, redis_url) -> None:
    secret = await _user_with_totp(client, pool)
    async with pool.acquire() as conn:
        user_id = await conn.fetchval("select id from users")
    redis = aioredis.Redis.from_url(redis_url)
    for _ in range(SECOND_FACTOR_HOURLY.limit):
        await ratelimit.hit(redis, settings.redis_namespace, SECOND_FACTOR_HOURLY, str(user_id))
    await redis.aclose()
    assert (await sign_in(client, "ada@example.com")).status == 401
    limited = await client.post(SECOND, json={"otp": totp_code(secret, 1)})
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) > 20


async def test_password_attempts_limited_per_account(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    for _ in range(LOGIN_LIMIT.limit):
        assert (await sign_in(client, "ada@example.com", "wrong password")).status == 401
    limited = await sign_in(client, "ADA@example.com", PASSWORD)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["detail"]
    # Another account from the same address is not affected.
    await create_user(pool, "bob@example.com")
    assert (await sign_in(client, "bob@example.com")).status == 200


async def test_password_success_clears_the_counter(client, pool, settings, redis_url):
    await create_user(pool, "ada@example.com")
    redis = aioredis.Redis.from_url(redis_url)
    for _ in range(2):
        for _ in range(LOGIN_LIMIT.limit - 2):
            await ratelimit.hit(
                redis, settings.redis_namespace, LOGIN_LIMIT, "127.0.0.1|ada@example.com"
            )
        assert (await sign_in(client, "ada@example.com", "wrong password")).status == 401
        assert (await sign_in(client, "ada@example.com")).status == 200
    await redis.aclose()


async def test_api_token_works_until_revoked(client, pool) -> None:
    user = await create_user(pool, "ada@example.com")
    other = await create_user(pool, "bob@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    made = await client.post("/api/0/api-tokens/", json={"name": "ci"})
    assert made.status == 201
    token = (await made.json())["token"]
    token_id = (await made.json())["id"]
    headers = {"Authorization": f"Bearer {token}"}
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "select token_hash from api_tokens where id = $1", int(token_id)
        )
    assert token.encode() not in bytes(stored)

    listed = await client.get("/api/0/api-tokens/")
    rows = await listed.json()
    assert [(t["id"], t["name"]) for t in rows] == [(token_id, "ci")]
    assert "token" not in rows[0]
    await client.post("/api/0/auth/logout/")

    assert (await client.get(ME, headers=headers)).status == 200
    bob = await token_for(pool, other["id"])
    assert (await client.delete(f"/api/0/api-tokens/{token_id}/", headers=bob)).status == 404
    assert (await client.get(ME, headers=headers)).status == 200
    assert (await client.delete(f"/api/0/api-tokens/{token_id}/", headers=headers)).status == 204
    refused = await client.get(ME, headers=headers)
    assert refused.status == 401 and (await refused.json())["detail"]
    assert (await client.delete("/api/0/api-tokens/abc/", headers=bob)).status == 404
    assert user["id"] != other["id"]


async def test_sign_in_with_only_a_backup_phone(client, pool) -> None:
    await client.post(
        "/api/0/auth/register/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    url = "/api/0/users/me/authenticators/sms/enroll/"
    with capture_logs() as logs:
        assert (await client.post(url, json={"phone": "+14155550123"})).status == 200
    enrolled = await client.post(url, json={"phone": "+14155550123", "otp": _last_code(logs)})
    assert enrolled.status == 201
    await client.post("/api/0/auth/logout/")

    with capture_logs() as logs:
        first = await sign_in(client, "ada@example.com")
    body = await first.json()
    assert first.status == 401 and body["interfaces"] == ["recovery", "sms"] and body["smsSent"]
    code = _last_code(logs)
    assert (await client.post(SECOND, json={"otp": code})).status == 200
    await client.post("/api/0/auth/logout/")

    # The code worked once; a resent one works.
    assert (await sign_in(client, "ada@example.com")).status == 401
    assert (await client.post(SECOND, json={"otp": code})).status == 401
    with capture_logs() as logs:
        resent = await client.post("/api/0/auth/2fa/sms/")
    assert resent.status == 200 and (await resent.json())["phone"] == "+1******0123"
    assert (await client.post(SECOND, json={"otp": _last_code(logs)})).status == 200
    assert (await client.post("/api/0/auth/2fa/sms/")).status == 400


async def test_totp_user_with_helper_sign_in(client, pool) -> None:
    secret = await _user_with_totp(client, pool)
    response = await sign_in_with_totp(client, "ada@example.com", secret)
    assert response.status == 200


def _last_code(logs: list) -> str:
    bodies = [entry["body"] for entry in logs if entry.get("event") == "sms.console"]
    assert bodies, logs
    match = re.search(r"\b(\d{6})\b", bodies[-1])
    assert match
    return match.group(1)
