"""Second factors through the HTTP API: TOTP, backup phone, recovery codes, removal rules."""

from __future__ import annotations

import asyncio
import hashlib
import re

import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from structlog.testing import capture_logs

from api.app import create_app
from db import authenticators, users
from require2fa.factors import last_factor
from require2fa.security import fernet_key
from tests.factories import PASSWORD, create_user, owner_and_org, sign_in, totp_code

BASE = "/api/0/users/me/authenticators/"
TOTP = BASE + "totp/enroll/"
SMS = BASE + "sms/enroll/"
REGENERATE = BASE + "recovery/regenerate/"
PHONE = "+14155550123"


async def _register(client, email: str = "ada@example.com") -> int:
    response = await client.post(
        "/api/0/auth/register/", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert response.status == 201
    return int((await response.json())["id"])


async def _enroll_totp(client) -> tuple[str, dict]:
    secret = (await (await client.post(TOTP, json={})).json())["secret"]
    confirmed = await client.post(TOTP, json={"secret": secret, "otp": totp_code(secret)})
    assert confirmed.status == 201, await confirmed.text()
    return secret, await confirmed.json()


def _sent_code(logs: list) -> str:
    bodies = [entry["body"] for entry in logs if entry.get("event") == "sms.console"]
    assert bodies, logs
    match = re.search(r"\b(\d{6})\b", bodies[-1])
    assert match
    return match.group(1)


async def _enroll_sms(client, phone: str = PHONE) -> dict:
    with capture_logs() as logs:
        sent = await client.post(SMS, json={"phone": phone})
    assert sent.status == 200, await sent.text()
    confirmed = await client.post(SMS, json={"phone": phone, "otp": _sent_code(logs)})
    assert confirmed.status == 201, await confirmed.text()
    return await confirmed.json()


async def _notices(pool) -> list:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "select * from email_outbox where template = 'security_notice' order by id"
        )


async def test_totp_enrollment(client, pool, settings) -> None:
    user_id = await _register(client)
    started = await client.post(TOTP, json={})
    assert started.status == 200
    body = await started.json()
    secret = body["secret"]
    assert len(secret) == 32
    assert body["otpauthUrl"].startswith("otpauth://totp/require2fa:ada%40example.com?")
    assert f"secret={secret}" in body["otpauthUrl"] and "issuer=require2fa" in body["otpauthUrl"]
    assert body["qrcode"].startswith("<svg") and "</svg>" in body["qrcode"]
    # Nothing is stored until a code confirms it.
    assert (await (await client.get("/api/0/users/me/")).json())["has2fa"] is False
    assert await (await client.get(BASE)).json() == []

    wrong = f"{(int(totp_code(secret)) + 5) % 10**6:06d}"
    refused = await client.post(TOTP, json={"secret": secret, "otp": wrong})
    assert refused.status == 400 and "otp" in (await refused.json())["errors"]
    bad_secret = await client.post(TOTP, json={"secret": "short", "otp": "123456"})
    assert bad_secret.status == 400 and "secret" in (await bad_secret.json())["errors"]

    confirmed = await client.post(TOTP, json={"secret": secret, "otp": totp_code(secret)})
    assert confirmed.status == 201
    factor = await confirmed.json()
    assert factor["type"] == "totp" and factor["name"] == "Authenticator app"
    codes = factor["recoveryCodes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert (await (await client.get("/api/0/users/me/")).json())["has2fa"] is True
    listed = await (await client.get(BASE)).json()
    assert [(a["type"], a.get("unusedCodes")) for a in listed] == [("totp", None), ("recovery", 10)]
    assert set(listed[0]) >= {"id", "type", "name", "createdAt", "lastUsedAt"}

    # The secret is not readable in the database; the key derived from SECRET_KEY opens it.
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from authenticators where type = 'totp'")
        dump = await conn.fetchval("select row_to_json(a)::text from authenticators a")
        code_hashes = await conn.fetch("select code_hash from recovery_codes")
    stored = bytes(row["secret_encrypted"])
    assert secret.encode() not in stored and secret not in dump
    assert Fernet(fernet_key(settings.secret_key, "totp-secret")).decrypt(stored) == secret.encode()
    plain = {c.replace("-", "").encode() for c in codes}
    sha = {hashlib.sha256(p).digest() for p in plain}
    assert len(code_hashes) == 10
    assert not {bytes(r["code_hash"]) for r in code_hashes} & (plain | sha)

    notices = await _notices(pool)
    assert len(notices) == 1 and notices[0]["to_address"] == "ada@example.com"
    assert notices[0]["dedupe_key"] == f"security:{factor['id']}:added"
    assert notices[0]["context"] == {
        "action": "added",
        "factor": "totp",
        "factor_name": "Authenticator app",
        "security_url": "http://testserver/account/security/",
    }
    assert (await client.post(TOTP, json={})).status == 409
    again = totp_code(secret, 1)
    assert (await client.post(TOTP, json={"secret": secret, "otp": again})).status == 409
    assert user_id


async def test_parallel_confirmations_enroll_one_factor(client, pool) -> None:
    await _register(client)
    secrets = [(await (await client.post(TOTP, json={})).json())["secret"] for _ in range(2)]
    responses = await asyncio.gather(
        *(client.post(TOTP, json={"secret": s, "otp": totp_code(s)}) for s in secrets)
    )
    assert sorted(r.status for r in responses) == [201, 409]
    async with pool.acquire() as conn:
        kinds = await conn.fetch("select type from authenticators order by type")
    assert [k["type"] for k in kinds] == ["recovery", "totp"]


async def test_enrollment_serializes_with_enforcement_on_the_user(client, pool) -> None:
    """A member removal that holds the user's lock first is seen through; one that comes
    after the enrollment committed sees the factor."""
    user_id = await _register(client)
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    async with pool.acquire() as conn:
        await conn.execute(
            "insert into members (organization_id, user_id, email, role) values ($1, $2, $3, $4)",
            org["id"],
            user_id,
            "ada@example.com",
            "member",
        )
    secret = (await (await client.post(TOTP, json={})).json())["secret"]

    async with pool.acquire() as enforcement, pool.acquire() as watcher:
        transaction = enforcement.transaction()
        await transaction.start()
        await users.lock(enforcement, [user_id])
        confirm = asyncio.create_task(
            client.post(TOTP, json={"secret": secret, "otp": totp_code(secret)})
        )
        # Until the enrollment's transaction is waiting for the same lock.
        while not await watcher.fetchval(
            """select exists (select 1 from pg_stat_activity
                              where datname = current_database() and wait_event_type = 'Lock')"""
        ):
            assert not confirm.done(), await confirm
            await asyncio.sleep(0.02)
        assert not await users.has_2fa(enforcement, user_id)
        await enforcement.execute(
            "update members set user_id = null, pending_reason = '2fa' where user_id = $1", user_id
        )
        await transaction.commit()
        response = await confirm
        assert response.status == 201

        async with enforcement.transaction():
            await users.lock(enforcement, [user_id])
            assert await users.has_2fa(enforcement, user_id)


async def test_regenerating_recovery_codes_voids_the_old_set(client, pool) -> None:
    await _register(client)
    assert (await client.post(REGENERATE)).status == 400  # no second factor yet
    secret, factor = await _enroll_totp(client)
    old = factor["recoveryCodes"]
    regenerated = await client.post(REGENERATE)
    assert regenerated.status == 200
    new = (await regenerated.json())["recoveryCodes"]
    assert len(new) == 10 and not set(new) & set(old)
    notices = await _notices(pool)
    assert [(n["context"]["action"], n["context"]["factor"]) for n in notices] == [
        ("added", "totp"),
        ("added", "recovery"),
    ]
    await client.post("/api/0/auth/logout/")

    assert (await sign_in(client, "ada@example.com")).status == 401
    assert (await client.post("/api/0/auth/2fa/", json={"otp": old[0]})).status == 401
    assert (await client.post("/api/0/auth/2fa/", json={"otp": new[0]})).status == 200
    listed = await (await client.get(BASE)).json()
    assert [a["unusedCodes"] for a in listed if a["type"] == "recovery"] == [9]
    assert secret


async def test_recovery_codes_alone_are_not_2fa(client, pool) -> None:
    user = await create_user(pool, "ada@example.com")
    async with pool.acquire() as conn, conn.transaction():
        await authenticators.replace_recovery_codes(
            conn, user_id=user["id"], code_hashes=[b"x" * 32]
        )
        assert not await users.has_2fa(conn, user["id"])
    assert (await sign_in(client, "ada@example.com")).status == 200


async def test_last_factor_rule(client, pool) -> None:
    user_id = await _register(client)
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    async with pool.acquire() as conn:
        await conn.execute(
            "insert into members (organization_id, user_id, email, role) values ($1, $2, $3, $4)",
            org["id"],
            user_id,
            "ada@example.com",
            "member",
        )
        await conn.execute("update organizations set require_2fa = true")
    _, totp_factor = await _enroll_totp(client)
    sms_factor = await _enroll_sms(client)
    assert "recoveryCodes" not in sms_factor  # the user has them already

    assert (await client.delete(f"{BASE}{totp_factor['id']}/")).status == 204
    refused = await client.delete(f"{BASE}{sms_factor['id']}/")
    assert refused.status == 403
    assert (await refused.json())["detail"] == last_factor("Acme", "any")
    listed = await (await client.get(BASE)).json()
    assert sorted(a["type"] for a in listed) == ["recovery", "sms"]

    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = false")
    assert (await client.delete(f"{BASE}{sms_factor['id']}/")).status == 204
    assert await (await client.get(BASE)).json() == []  # the recovery codes went too
    assert (await (await client.get("/api/0/users/me/")).json())["has2fa"] is False
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from recovery_codes") == 0
    removed = [n["context"] for n in await _notices(pool) if n["context"]["action"] == "removed"]
    assert [(c["factor"], c["factor_name"]) for c in removed] == [
        ("totp", "Authenticator app"),
        ("sms", "Backup phone"),
    ]


async def test_deleting_someone_elses_factor_is_404(client, pool) -> None:
    other = await create_user(pool, "bob@example.com", has2fa=True)
    await _register(client)
    async with pool.acquire() as conn:
        theirs = await conn.fetchval(
            "select id from authenticators where user_id = $1", other["id"]
        )
    assert (await client.delete(f"{BASE}{theirs}/")).status == 404
    assert (await client.delete(f"{BASE}abc/")).status == 404
    assert (await client.delete(f"{BASE}99999999999999999999/")).status == 404


async def test_sms_enrollment(client, pool, settings, redis_url) -> None:
    user_id = await _register(client)
    invalid = await client.post(SMS, json={"phone": "0415 555 0123"})
    assert invalid.status == 400 and "phone" in (await invalid.json())["errors"]

    with capture_logs() as logs:
        sent = await client.post(SMS, json={"phone": "+1 415 555 0123"})
    assert sent.status == 200
    assert (await sent.json())["phone"] == PHONE
    code = _sent_code(logs)
    redis = aioredis.Redis.from_url(redis_url)
    ttl = await redis.ttl(f"{settings.redis_namespace}:sms-code:enroll:{user_id}")
    await redis.aclose()
    assert 0 < ttl <= 300

    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert (await client.post(SMS, json={"phone": PHONE, "otp": wrong})).status == 400
    other_phone = await client.post(SMS, json={"phone": "+14155550124", "otp": code})
    assert other_phone.status == 400
    confirmed = await client.post(SMS, json={"phone": PHONE, "otp": code})
    assert confirmed.status == 201
    factor = await confirmed.json()
    assert factor["type"] == "sms" and factor["phone"] == "+1******0123"
    assert len(factor["recoveryCodes"]) == 10
    assert (await (await client.get("/api/0/users/me/")).json())["has2fa"] is True
    assert (await client.post(SMS, json={"phone": PHONE})).status == 409

    # The code worked once: with the factor gone it does not enroll the number again.
    assert (await client.delete(f"{BASE}{factor['id']}/")).status == 204
    assert (await client.post(SMS, json={"phone": PHONE, "otp": code})).status == 400
    notices = await _notices(pool)
    assert [n["context"]["factor"] for n in notices] == ["sms", "sms"]


async def test_sms_sends_are_rate_limited(client, pool) -> None:
    await _register(client)
    with capture_logs():
        for _ in range(5):
            assert (await client.post(SMS, json={"phone": PHONE})).status == 200
        limited = await client.post(SMS, json={"phone": PHONE})
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["detail"]


async def test_sms_gateway_failure_is_a_json_503(aiohttp_client, settings, pool) -> None:
    client = await aiohttp_client(create_app(settings.replace(sms_url="https://127.0.0.1:1/")))
    await _register(client)
    response = await client.post(SMS, json={"phone": PHONE})
    assert response.status == 503
    assert (await response.json())["detail"]


async def test_second_factor_codes_when_enrolling_are_rate_limited(client, pool) -> None:
    await _register(client)
    secret = (await (await client.post(TOTP, json={})).json())["secret"]
    wrong = f"{(int(totp_code(secret)) + 3) % 10**6:06d}"
    statuses = [
        (await client.post(TOTP, json={"secret": secret, "otp": wrong})).status for _ in range(6)
    ]
    assert statuses == [400] * 5 + [429]
