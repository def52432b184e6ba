"""The security page manages every factor, and the sign-in page offers every second step.

The browser half of the key ceremonies (api/static/webauthn.js) is exercised in Chromium by
tests/browser/; here the same requests it makes are made directly: the options from the API
with the page's session cookie, the answer posted in the page's form.
"""

from __future__ import annotations

import json
import re
from html import unescape
from urllib.parse import unquote

from structlog.testing import capture_logs

from require2fa.factors import LAST_FACTOR
from tests.api.test_authenticators import _sent_code
from tests.factories import PASSWORD, add_member, owner_and_org
from tests.softkey import SoftKey

PHONE = "+14155550123"


async def _signed_up(client, email: str = "ada@example.com") -> int:
    response = await client.post(
        "/api/0/auth/register/", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert response.status == 201
    return int((await response.json())["id"])


async def _add_key_through_page(client, key: SoftKey, name: str) -> str:
    options = (
        await (await client.post("/api/0/users/me/authenticators/webauthn/register/")).json()
    )["publicKey"]
    added = await client.post(
        "/account/security/webauthn/",
        data={"credential": json.dumps(key.create(options)), "name": name},
    )
    page = await added.text()
    assert added.status == 201, page
    return page


def _no_inline_script(page: str) -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script"
    assert not re.search(r"\son[a-z]+\s*=", page, re.I), "inline event handler"


async def test_every_factor_is_added_listed_renamed_and_removed(client, pool) -> None:
    await _signed_up(client)
    page = await (await client.get("/account/security/")).text()
    assert "Add a security key or passkey" in page
    # No backup phone before there is something for it to back up.
    assert "Add a backup phone" not in page and "you can add a backup phone" in page
    assert 'src="/static/webauthn.js"' in page
    _no_inline_script(page)

    # A key first: recovery codes shown once, with a .txt download holding them.
    page = await _add_key_through_page(client, SoftKey(), "YubiKey")
    assert "YubiKey added." in page and "Your recovery codes" in page
    codes = re.findall(r"<li>([0-9a-z]{5}-[0-9a-z]{5})</li>", page)
    assert len(codes) == 10, page
    assert "Add a backup phone" in page
    link = re.search(r'href="(data:text/plain;charset=utf-8,[^"]+)" download="([^"]+)"', page)
    assert link and link.group(2) == "require2fa-recovery-codes.txt"
    text = unquote(unescape(link.group(1)).split(",", 1)[1])
    assert all(code in text for code in codes)

    # A backup phone: send, then confirm.
    with capture_logs() as logs:
        sent = await client.post("/account/security/sms/", data={"phone": "+1 415 555 0123"})
    page = await sent.text()
    assert sent.status == 200 and "We texted a code to +1******0123." in page
    assert 'name="phone" value="+14155550123"' in page
    wrong = await client.post("/account/security/sms/", data={"phone": PHONE, "otp": "12"})
    assert wrong.status == 400 and "Invalid verification code." in await wrong.text()
    confirmed = await client.post(
        "/account/security/sms/", data={"phone": PHONE, "otp": _sent_code(logs)}
    )
    page = await confirmed.text()
    assert confirmed.status == 201 and "Backup phone added." in page
    assert "Your recovery codes" not in page  # only the first factor brings them
    assert "Add a backup phone" not in page

    async with pool.acquire() as conn:
        rows = await conn.fetch("select id, type, name from authenticators order by id")
    kinds = {row["type"]: row for row in rows}
    assert set(kinds) == {"webauthn", "recovery", "sms"}
    for label in ("Security key or passkey", "Backup phone", "Recovery codes", "never"):
        assert label in page

    key_id = kinds["webauthn"]["id"]
    renamed = await client.post(
        f"/account/security/factors/{key_id}/rename/", data={"name": "Blue key"}
    )
    assert renamed.status == 200 and "Renamed to Blue key." in await renamed.text()
    blank = await client.post(f"/account/security/factors/{key_id}/rename/", data={"name": " "})
    assert blank.status == 400
    unknown = await client.post("/account/security/factors/999999/rename/", data={"name": "x"})
    assert unknown.status == 404

    regenerated = await client.post("/account/security/recovery/")
    page = await regenerated.text()
    assert regenerated.status == 200 and "New recovery codes." in page
    assert not set(re.findall(r"<li>([0-9a-z]{5}-[0-9a-z]{5})</li>", page)) & set(codes)

    # Under a requirement the last factor stays, with the contract's sentence.
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    async with pool.acquire() as conn:
        ada = await conn.fetchrow("select * from users where email = 'ada@example.com'")
        await conn.execute("update organizations set require_2fa = true")
    await add_member(pool, org["id"], ada)
    removed = await client.post(f"/account/security/factors/{kinds['sms']['id']}/remove/")
    assert removed.status == 200 and "Backup phone removed." in await removed.text()
    refused = await client.post(f"/account/security/factors/{key_id}/remove/")
    assert refused.status == 403 and LAST_FACTOR in await refused.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from authenticators where type = 'webauthn'")


async def test_a_bad_key_answer_on_the_page_is_refused(client, pool) -> None:
    await _signed_up(client)
    for credential in ("", "not json", "[]", json.dumps({"id": "AA"})):
        response = await client.post(
            "/account/security/webauthn/", data={"credential": credential, "name": "K"}
        )
        assert response.status == 400
        assert "could not be verified" in await response.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from authenticators") == 0


async def test_sign_in_page_with_a_security_key(client, pool) -> None:
    await _signed_up(client)
    key = SoftKey()
    await _add_key_through_page(client, key, "YubiKey")
    await client.post("/api/0/auth/logout/")

    step = await client.post(
        "/auth/login/", data={"email": "ada@example.com", "password": PASSWORD}
    )
    page = await step.text()
    assert "Use your security key" in page and 'src="/static/webauthn.js"' in page
    assert "Text me a code" not in page
    _no_inline_script(page)

    options = (await (await client.post("/api/0/auth/2fa/webauthn/", json={})).json())["publicKey"]
    bad = await client.post(
        "/auth/login/", data={"webauthn": json.dumps(key.get(options, tamper=True))}
    )
    assert bad.status == 400 and "could not be verified" in await bad.text()
    options = (await (await client.post("/api/0/auth/2fa/webauthn/", json={})).json())["publicKey"]
    done = await client.post(
        "/auth/login/",
        data={"webauthn": json.dumps(key.get(options)), "next": "/account/security/"},
        allow_redirects=False,
    )
    assert done.status == 303 and done.headers["Location"] == "/account/security/"
    assert (await client.get("/api/0/users/me/")).status == 200


async def test_sign_in_page_texts_a_code_on_request(client, pool) -> None:
    await _signed_up(client)
    with capture_logs() as logs:
        await client.post("/api/0/users/me/authenticators/sms/enroll/", json={"phone": PHONE})
    confirmed = await client.post(
        "/api/0/users/me/authenticators/sms/enroll/",
        json={"phone": PHONE, "otp": _sent_code(logs)},
    )
    assert confirmed.status == 201
    await client.post("/api/0/auth/logout/")

    step = await client.post(
        "/auth/login/", data={"email": "ada@example.com", "password": PASSWORD}
    )
    page = await step.text()
    assert "Text me a code" in page and "Use your security key" not in page
    assert "webauthn.js" not in page
    with capture_logs() as logs:
        texted = await client.post("/auth/login/", data={"send_sms": "1"})
    assert "We texted a code to +1******0123." in await texted.text()
    done = await client.post("/auth/login/", data={"otp": _sent_code(logs)}, allow_redirects=False)
    assert done.status == 303
    assert (await client.get("/api/0/users/me/")).status == 200


async def test_static_script_is_served(client) -> None:
    response = await client.get("/static/webauthn.js")
    assert response.status == 200
    assert "javascript" in response.content_type
    assert "navigator.credentials" in await response.text()
    assert (await client.get("/static/../routes.py")).status in (403, 404)
