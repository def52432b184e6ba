"""Re-authentication with a security key (issue 10, point 3): `POST auth/sudo/` takes
`{"webauthn": assertion}` answering the challenge of `POST auth/sudo/webauthn/`, and the pages'
inline step offers the key to those who have one."""

from __future__ import annotations

import json

from tests.api.test_webauthn import _add_key, _register_user
from tests.security.helpers import age_reauthentication
from tests.softkey import SoftKey

SUDO = "/api/0/auth/sudo/"
SUDO_KEY = "/api/0/auth/sudo/webauthn/"
TOKENS = "/api/0/api-tokens/"


async def _sudo_required(response) -> None:
    assert response.status == 401, await response.text()
    body = await response.json()
    assert body["code"] == "sudo-required" and body["detail"]


async def _options(client) -> dict:
    started = await client.post(SUDO_KEY, json={})
    assert started.status == 200, await started.text()
    return (await started.json())["publicKey"]


async def test_a_security_key_confirms(client, pool) -> None:
    await _register_user(client)
    key = SoftKey()
    await _add_key(client, key)
    await age_reauthentication(pool)
    await _sudo_required(await client.post(TOKENS, json={}))

    answer = key.get(await _options(client))
    confirmed = await client.post(SUDO, json={"webauthn": answer})
    assert confirmed.status == 200, await confirmed.text()
    assert "sudoUntil" in await confirmed.json()
    assert (await client.post(TOKENS, json={})).status == 201

    # The challenge was spent: the same answer again confirms nothing.
    await age_reauthentication(pool)
    await _sudo_required(await client.post(SUDO, json={"webauthn": answer}))
    await _sudo_required(await client.post(TOKENS, json={}))


async def test_wrong_answers_and_bad_input(client, pool) -> None:
    await _register_user(client)
    await _add_key(client, SoftKey())
    await age_reauthentication(pool)
    # A key that is not theirs, over a real challenge.
    stranger = SoftKey().get(await _options(client))
    await _sudo_required(await client.post(SUDO, json={"webauthn": stranger}))
    await _sudo_required(await client.post(SUDO, json={"webauthn": {"id": "nothing"}}))
    both = await client.post(SUDO, json={"webauthn": {}, "password": "x" * 10})
    assert both.status == 400 and (await both.json())["detail"]
    assert (await client.post(SUDO_KEY, json={"extra": 1})).status == 400
    await _sudo_required(await client.post(TOKENS, json={}))


async def test_without_a_key_there_is_no_key_step(client, pool) -> None:
    await _register_user(client)
    response = await client.post(SUDO_KEY, json={})
    assert response.status == 400 and (await response.json())["detail"]
    assert (await client.post(SUDO_KEY, json={})).status == 400
    await client.post("/api/0/auth/logout/")
    assert (await client.post(SUDO_KEY, json={})).status == 401


async def test_the_pages_inline_step_offers_the_key(client, pool) -> None:
    await _register_user(client)
    key = SoftKey()
    await _add_key(client, key)
    await age_reauthentication(pool)
    asked = await client.post("/account/security/recovery/", data={})
    assert asked.status == 401
    page = await asked.text()
    assert "Use your security key" in page and 'data-options="/api/0/auth/sudo/webauthn/"' in page
    assert '<script src="/static/webauthn.js" defer></script>' in page

    answer = json.dumps(key.get(await _options(client)))
    done = await client.post("/account/security/recovery/", data={"sudo_webauthn": answer})
    assert done.status == 200, await done.text()
    assert "Your recovery codes" in await done.text()
