"""The API tokens page (create, shown once; list with last used; revoke) and the API reference
at /docs/, rendered here from openapi.json."""

from __future__ import annotations

import re

from tests.factories import create_user, sign_in

TOKENS = "/account/tokens/"


async def test_create_use_list_and_revoke_a_token(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    assert "No tokens yet." in await (await client.get(TOKENS)).text()

    created = await client.post(TOKENS, data={"name": "CI deploys"})
    text = await created.text()
    assert created.status == 201 and "It is shown this once" in text
    token = re.search(r'<code id="new-token">([^<]+)</code>', text)
    assert token is not None
    assert "never" in text  # not used yet

    used = await client.get("/api/0/users/me/", headers={"Authorization": f"Bearer {token[1]}"})
    assert used.status == 200
    page = await (await client.get(TOKENS)).text()
    assert "CI deploys" in page and token[1] not in page and "never" not in page

    async with pool.acquire() as conn:
        token_id = await conn.fetchval("select id from api_tokens")
    revoked = await client.post(f"{TOKENS}{token_id}/revoke/")
    assert "The token was revoked" in await revoked.text()
    again = await client.get("/api/0/users/me/", headers={"Authorization": f"Bearer {token[1]}"})
    assert again.status == 401


async def test_the_api_reference_is_served_here(client) -> None:
    page = await client.get("/docs/")
    text = await page.text()
    assert page.status == 200 and "API reference" in text
    assert "/api/0/organizations/{org}/members/" in text and "require2FA" in text
    assert "http://" not in text.replace("http://127.0.0.1", "") and "https://cdn" not in text
