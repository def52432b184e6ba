"""Login CSRF (issue 25, point 1): another site cannot sign a visitor's browser into an account
of its choosing, with or without a session cookie, and a `text/plain` form cannot pass for a
JSON body."""

from __future__ import annotations

import json

import pytest

from api.keys import SESSION_COOKIE
from tests.factories import PASSWORD, create_user

LOGIN = "/api/0/auth/login/"
REGISTER = "/api/0/auth/register/"
EVIL = "https://evil.example"


def _has_session(client) -> bool:
    return any(cookie.key == SESSION_COOKIE for cookie in client.session.cookie_jar)


async def test_the_issues_example_is_refused(client, pool) -> None:
    await create_user(pool, "attacker@example.com")
    body = json.dumps({"email": "attacker@example.com", "password": PASSWORD})
    response = await client.post(
        LOGIN, data=body, headers={"Content-Type": "text/plain", "Origin": EVIL}
    )
    assert response.status == 403
    assert (await response.json())["detail"]
    assert not _has_session(client)
    assert (await client.get("/api/0/users/me/")).status == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json", "Origin": EVIL},
        {"Content-Type": "application/json", "Origin": "null"},
        {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"},
    ],
)
@pytest.mark.parametrize("path", [LOGIN, REGISTER])
async def test_sign_in_and_sign_up_from_another_site_are_refused(
    client, pool, path, headers
) -> None:
    await create_user(pool, "attacker@example.com")
    email = "attacker@example.com" if path == LOGIN else "new@example.com"
    body = json.dumps({"email": email, "password": PASSWORD, "name": "New"})
    response = await client.post(path, data=body, headers=headers)
    assert response.status == 403, await response.text()
    assert (await response.json())["detail"]
    assert not _has_session(client)
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from users") == 1


@pytest.mark.parametrize("path", [LOGIN, REGISTER])
async def test_a_text_plain_body_is_not_read_as_json(client, pool, path) -> None:
    """Without an `Origin` (an old browser, a privacy extension), the content type still
    decides: only `application/json` is read as JSON."""
    await create_user(pool, "attacker@example.com")
    email = "attacker@example.com" if path == LOGIN else "new@example.com"
    body = json.dumps({"email": email, "password": PASSWORD, "name": "New"})
    response = await client.post(path, data=body, headers={"Content-Type": "text/plain"})
    assert response.status == 400
    assert "application/json" in (await response.json())["detail"]
    assert not _has_session(client)


async def test_our_own_sign_in_and_sign_up_pass(client, pool) -> None:
    await create_user(pool, "owner@example.com")
    ours = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    response = await client.post(
        LOGIN, json={"email": "owner@example.com", "password": PASSWORD}, headers=ours
    )
    assert response.status == 200, await response.text()
    await client.post("/api/0/auth/logout/", headers=ours)
    response = await client.post(
        REGISTER,
        json={"email": "new@example.com", "password": PASSWORD, "name": "New"},
        headers=ours,
    )
    assert response.status == 201, await response.text()
    assert (await client.get("/api/0/users/me/")).status == 200


async def test_the_sign_in_page_refuses_a_form_from_another_site(client, pool) -> None:
    await create_user(pool, "attacker@example.com")
    form = {"email": "attacker@example.com", "password": PASSWORD}
    response = await client.post(
        "/auth/login/", data=form, headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False
    )
    assert response.status == 403
    assert not _has_session(client)
    response = await client.post(
        "/auth/login/", data=form, headers={"Origin": "http://testserver"}, allow_redirects=False
    )
    assert response.status in (302, 303)
    assert _has_session(client)
