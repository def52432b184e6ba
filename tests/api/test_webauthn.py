"""Security keys and passkeys through the HTTP API, against a software authenticator that signs
real assertions (tests/softkey.py); the server's verifier (py_webauthn) is the real one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.app import create_app
from require2fa.factors import last_factor
from require2fa.security_keys import KEY_NOT_ACCEPTED, KEY_TAKEN
from tests.factories import PASSWORD, add_member, create_user, owner_and_org, sign_in
from tests.softkey import SoftKey, b64url, unb64url

BASE = "/api/0/users/me/authenticators/"
REGISTER = BASE + "webauthn/register/"
STEP = "/api/0/auth/2fa/"
STEP_KEY = "/api/0/auth/2fa/webauthn/"


async def _register_user(client, email: str = "ada@example.com") -> int:
    response = await client.post(
        "/api/0/auth/register/", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert response.status == 201
    return int((await response.json())["id"])


async def _options(client) -> dict[str, Any]:
    started = await client.post(REGISTER, json={})
    assert started.status == 200, await started.text()
    return (await started.json())["publicKey"]


async def _add_key(client, key: SoftKey, name: str = "YubiKey") -> dict[str, Any]:
    options = await _options(client)
    added = await client.post(REGISTER, json={"credential": key.create(options), "name": name})
    assert added.status == 201, await added.text()
    return await added.json()


async def _half_signed_in(client, email: str = "ada@example.com") -> dict[str, Any]:
    first = await sign_in(client, email)
    assert first.status == 401
    return await first.json()


async def _request_options(client) -> dict[str, Any]:
    started = await client.post(STEP_KEY, json={})
    assert started.status == 200, await started.text()
    return (await started.json())["publicKey"]


async def _key_row(pool, name: str = "YubiKey") -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchrow(
            "select * from authenticators where type = 'webauthn' and name = $1", name
        )


async def _signed_in_fully(client) -> bool:
    return (await client.get("/api/0/users/me/")).status == 200


async def test_registration_writes_a_key_with_recovery_codes(client, pool) -> None:
    await _register_user(client)
    options = await _options(client)
    assert options["rp"] == {"id": "testserver", "name": "require2fa"}
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert options["user"]["name"] == "ada@example.com"
    assert len(unb64url(options["challenge"])) == 32
    assert options["excludeCredentials"] == []
    # Nothing is stored until the response verifies.
    assert (await (await client.get("/api/0/users/me/")).json())["has2fa"] is False

    key = SoftKey()
    added = await client.post(REGISTER, json={"credential": key.create(options), "name": "YubiKey"})
    assert added.status == 201, await added.text()
    factor = await added.json()
    assert factor["type"] == "webauthn" and factor["name"] == "YubiKey"
    assert len(factor["recoveryCodes"]) == 10
    assert (await (await client.get("/api/0/users/me/")).json())["has2fa"] is True
    row = await _key_row(pool)
    assert bytes(row["credential_id"]) == key.credential_id
    assert bytes(row["public_key"]) == key.cose_public_key()
    assert row["sign_count"] == 0 and row["transports"] == ["usb"]
    async with pool.acquire() as conn:
        notice = await conn.fetchval(
            "select context from email_outbox where template = 'security_notice'"
        )
    assert notice["factor"] == "webauthn" and notice["factor_name"] == "YubiKey"

    # A second key: the first one is excluded in the options, no new recovery codes.
    options = await _options(client)
    assert [d["id"] for d in options["excludeCredentials"]] == [b64url(key.credential_id)]
    second = await _add_key(client, SoftKey(), name="Laptop passkey")
    assert "recoveryCodes" not in second
    listed = await (await client.get(BASE)).json()
    assert sorted(a["type"] for a in listed) == ["recovery", "webauthn", "webauthn"]


async def test_registration_refusals_change_nothing(client, pool) -> None:
    await _register_user(client)
    key = SoftKey()

    async def refused(credential: Any, status: int = 400) -> None:
        response = await client.post(REGISTER, json={"credential": credential, "name": "K"})
        assert response.status == status, await response.text()
        assert (await response.json())["detail"]
        async with pool.acquire() as conn:
            assert await conn.fetchval("select count(*) from authenticators") == 0

    # No challenge asked for in this session.
    await refused(key.create({"rp": {"id": "testserver"}, "challenge": b64url(b"x" * 32)}))
    options = await _options(client)
    await refused(key.create(options, origin="https://evil.example"))
    options = await _options(client)
    await refused(key.create(options, rp_id="evil.example"))
    options = await _options(client)
    await refused(key.create(options, challenge=b64url(b"other challenge, not ours")))
    # Garbage in every shape the JSON allows.
    for junk in (
        {},
        {"id": "x"},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {}},
    ):
        await _options(client)
        await refused(junk)
    await _options(client)
    await refused(
        {
            "id": "AA",
            "rawId": "AA",
            "type": "public-key",
            "response": {"clientDataJSON": "!!", "attestationObject": "AA"},
        }
    )
    wrong_type = await client.post(REGISTER, json={"credential": "text"})
    assert wrong_type.status == 400

    # The answer to one challenge works once.
    options = await _options(client)
    credential = key.create(options)
    assert (await client.post(REGISTER, json={"credential": credential})).status == 201
    again = await client.post(REGISTER, json={"credential": credential})
    assert again.status == 400 and (await again.json())["detail"] == KEY_NOT_ACCEPTED
    # The same key, answering a fresh challenge, is refused as a duplicate.
    options = await _options(client)
    duplicate = await client.post(REGISTER, json={"credential": key.create(options)})
    assert duplicate.status == 409 and (await duplicate.json())["detail"] == KEY_TAKEN


async def test_challenge_is_bound_to_the_session_and_short_lived(
    client, aiohttp_client, settings, pool, redis_url
) -> None:
    await _register_user(client)
    options = await _options(client)
    redis = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in redis.scan_iter(f"{settings.redis_namespace}:webauthn:register:*")]
    assert len(keys) == 1
    assert 0 < await redis.ttl(keys[0]) <= 300
    await redis.aclose()

    other = await aiohttp_client(create_app(settings))
    assert (await sign_in(other, "ada@example.com")).status == 200
    stolen = await other.post(REGISTER, json={"credential": SoftKey().create(options)})
    assert stolen.status == 400
    # The session that asked can still finish it.
    assert (
        await client.post(REGISTER, json={"credential": SoftKey().create(options)})
    ).status == 201


async def test_sign_in_with_a_key(client, pool) -> None:
    await _register_user(client)
    key = SoftKey()
    await _add_key(client, key)
    await client.post("/api/0/auth/logout/")

    first = await _half_signed_in(client)
    assert first["2faRequired"] is True and "webauthn" in first["interfaces"]
    assert "smsSent" not in first
    assert not await _signed_in_fully(client)
    options = await _request_options(client)
    assert options["rpId"] == "testserver" and options["userVerification"] == "preferred"
    assert [d["id"] for d in options["allowCredentials"]] == [b64url(key.credential_id)]

    done = await client.post(STEP, json={"webauthn": key.get(options)})
    assert done.status == 200, await done.text()
    assert (await done.json())["email"] == "ada@example.com"
    assert await _signed_in_fully(client)
    row = await _key_row(pool)
    assert row["sign_count"] == 1 and row["last_used_at"] is not None
    # Once signed in there is no key step to start.
    assert (await client.post(STEP_KEY, json={})).status == 400


BAD_ASSERTIONS = {
    "no challenge asked for": None,
    "another challenge": {"challenge": b64url(b"a challenge we never gave")},
    "wrong origin": {"origin": "https://evil.example"},
    "wrong RP id": {"rp_id": "evil.example"},
    "tampered signature": {"tamper": True},
    "unknown credential": "unknown",
    "another user's key": "bob",
    "malformed": "malformed",
}


@pytest.mark.parametrize("case", list(BAD_ASSERTIONS))
async def test_bad_assertions_are_refused_and_change_nothing(client, pool, case) -> None:
    await _register_user(client)
    key = SoftKey()
    await _add_key(client, key)
    bob = await create_user(pool, "bob@example.com")
    bob_client_key = SoftKey()
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into authenticators (user_id, type, name, credential_id, public_key,
                                           sign_count, confirmed_at)
               values ($1, 'webauthn', 'Bob key', $2, $3, 0, now())""",
            bob["id"],
            bob_client_key.credential_id,
            bob_client_key.cose_public_key(),
        )
    await client.post("/api/0/auth/logout/")
    await _half_signed_in(client)
    before = await _key_row(pool)

    how = BAD_ASSERTIONS[case]
    if how is None:
        credential = key.get({"rpId": "testserver", "challenge": b64url(b"y" * 32)})
    else:
        options = await _request_options(client)
        if how == "unknown":
            credential = SoftKey().get(options)
        elif how == "bob":
            credential = bob_client_key.get(options)
        elif how == "malformed":
            credential = {"id": "AA", "rawId": "AA", "type": "public-key", "response": {}}
        else:
            credential = key.get(options, **how)
    response = await client.post(STEP, json={"webauthn": credential})
    assert 400 <= response.status < 500, await response.text()
    body = await response.json()
    assert body["detail"] and body.get("2faRequired") is True
    assert not await _signed_in_fully(client)
    row = await _key_row(pool)
    assert (row["sign_count"], row["last_used_at"]) == (
        before["sign_count"],
        before["last_used_at"],
    )

    # The challenge is spent: the right answer to it no longer works; a fresh one does.
    if how is not None:
        late = await client.post(STEP, json={"webauthn": key.get(options)})
        assert late.status == 401
    options = await _request_options(client)
    assert (await client.post(STEP, json={"webauthn": key.get(options)})).status == 200


async def test_second_step_body_is_validated(client, pool) -> None:
    await _register_user(client)
    await _add_key(client, SoftKey())
    await client.post("/api/0/auth/logout/")
    await _half_signed_in(client)
    assert (await client.post(STEP, json={"webauthn": "text"})).status == 400
    assert (await client.post(STEP, json={"webauthn": {}, "otp": "123456"})).status == 400
    assert (await client.post(STEP, json={})).status == 400
    assert (await client.post(STEP_KEY, json={"extra": 1})).status == 400


async def test_replayed_assertions_and_counters_going_back(aiohttp_client, settings, pool) -> None:
    client = await aiohttp_client(create_app(settings))
    await _register_user(client)
    key = SoftKey()
    await _add_key(client, key)
    await client.post("/api/0/auth/logout/")

    await _half_signed_in(client)
    options = await _request_options(client)
    assertion = key.get(options)  # counter 1
    assert (await client.post(STEP, json={"webauthn": assertion})).status == 200
    await client.post("/api/0/auth/logout/")

    # The same assertion again, in a new sign-in: its challenge was used.
    await _half_signed_in(client)
    await _request_options(client)
    replay = await client.post(STEP, json={"webauthn": assertion})
    assert replay.status == 401
    # A fresh challenge signed with a counter that did not go forward.
    options = await _request_options(client)
    back = await client.post(STEP, json={"webauthn": key.get(options, counter=1)})
    assert back.status == 401
    options = await _request_options(client)
    back = await client.post(STEP, json={"webauthn": key.get(options, counter=0)})
    assert back.status == 401
    assert (await _key_row(pool))["sign_count"] == 1
    options = await _request_options(client)
    assert (await client.post(STEP, json={"webauthn": key.get(options)})).status == 200
    assert (await _key_row(pool))["sign_count"] == 2


async def test_a_key_without_a_counter_relies_on_single_use_challenges(client, pool) -> None:
    await _register_user(client)
    key = SoftKey(counts=False)
    await _add_key(client, key)
    await client.post("/api/0/auth/logout/")
    await _half_signed_in(client)
    options = await _request_options(client)
    assertion = key.get(options)
    # Two at once with the same answer: one wins.
    responses = await asyncio.gather(
        client.post(STEP, json={"webauthn": assertion}),
        client.post(STEP, json={"webauthn": assertion}),
    )
    assert sorted(r.status for r in responses) in ([200, 400], [200, 401])
    assert (await _key_row(pool))["sign_count"] == 0


async def test_keys_are_renamed_and_removed_under_the_last_factor_rule(client, pool) -> None:
    user_id = await _register_user(client)
    first = await _add_key(client, SoftKey())
    second = await _add_key(client, SoftKey(), name="Backup key")

    renamed = await client.put(f"{BASE}{first['id']}/", json={"name": "  Blue   key "})
    assert renamed.status == 200 and (await renamed.json())["name"] == "Blue key"
    assert (await client.put(f"{BASE}{first['id']}/", json={"name": ""})).status == 400
    assert (await client.put(f"{BASE}{first['id']}/", json={"name": "   "})).status == 400
    assert (await client.put(f"{BASE}{first['id']}/", json={})).status == 400
    recovery = next(a for a in await (await client.get(BASE)).json() if a["type"] == "recovery")
    assert (await client.put(f"{BASE}{recovery['id']}/", json={"name": "x"})).status == 404
    other = await create_user(pool, "bob@example.com", has2fa=True)
    async with pool.acquire() as conn:
        theirs = await conn.fetchval(
            "select id from authenticators where user_id = $1", other["id"]
        )
    assert (await client.put(f"{BASE}{theirs}/", json={"name": "mine"})).status == 404

    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    async with pool.acquire() as conn:
        ada = await conn.fetchrow("select * from users where id = $1", user_id)
    await add_member(pool, org["id"], ada)
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true")

    assert (await client.delete(f"{BASE}{first['id']}/")).status == 204
    last = await client.delete(f"{BASE}{second['id']}/")
    assert last.status == 403 and (await last.json())["detail"] == last_factor("Acme", "any")
    # A key is a second factor for the organization too.
    assert (await client.get("/api/0/organizations/acme/")).status == 200


async def test_a_key_counts_for_compliance_and_invitees(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    user_id = await _register_user(client)
    await _add_key(client, SoftKey())
    async with pool.acquire() as conn:
        ada = await conn.fetchrow("select * from users where id = $1", user_id)
    await add_member(pool, org["id"], ada)
    plain = await create_user(pool, "plain@example.com")
    await add_member(pool, org["id"], plain)

    from tests.factories import token_for

    headers = await token_for(pool, owner["id"])
    compliance = await client.get("/api/0/organizations/acme/2fa-compliance/", headers=headers)
    assert compliance.status == 200
    body = await compliance.json()
    assert [m["email"] for m in body["members"]] == ["plain@example.com"]
