"""The pages a person uses to come back through the email's link: look at it, sign in or up,
set up an authenticator app, be back in the organization."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import pyotp

from tests.factories import (
    PASSWORD,
    add_member,
    create_user,
    owner_and_org,
    remove_for_2fa,
    totp_code,
)


async def seed(pool, settings, *, require_2fa: bool = True):
    """Acme (requiring 2FA or not), its owner, and Alice removed from it; her link's path."""
    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend",)
    )
    async with pool.acquire() as conn:
        await conn.execute(
            "update organizations set require_2fa = $2 where id = $1", org["id"], require_2fa
        )
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(pool, org["id"], alice, role="admin", teams=("backend",))
    link = await remove_for_2fa(pool, member_id, settings)
    return org, member_id, urlsplit(link).path


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, page
    return html.unescape(found.group(1))


async def test_the_whole_way_back_in_through_pages(client, pool, settings) -> None:
    _, member_id, path = await seed(pool, settings)

    looked = await client.get(path)
    page = await looked.text()
    assert looked.status == 200 and looked.content_type == "text/html"
    assert "Rejoin Acme" in page and "alice@example.com" in page
    assert "/auth/login/?next=" in page and "/auth/register/?next=" in page

    signed = await client.post(
        "/auth/login/",
        data={"email": "alice@example.com", "password": PASSWORD, "next": path},
        allow_redirects=False,
    )
    assert signed.status == 303 and signed.headers["Location"] == path

    looked = await client.get(path)
    page = await looked.text()
    assert looked.status == 200
    assert "Set up two-factor authentication" in page and 'href="/account/security/"' in page
    assert "Rejoin Acme</button>" not in page

    security = await client.get("/account/security/")
    page = await security.text()
    assert security.status == 200 and "<svg" in page
    secret = hidden(page, "secret")
    assert f"<code>{secret}</code>" in page

    wrong = await client.post("/account/security/totp/", data={"secret": secret, "otp": "000000"})
    if wrong.status == 400:  # 000000 could, once in a million, be the right code
        assert "Invalid verification code." in await wrong.text()

    enrolled = await client.post(
        "/account/security/totp/", data={"secret": secret, "otp": pyotp.TOTP(secret).now()}
    )
    page = await enrolled.text()
    assert enrolled.status == 201, page
    assert "alice@example.com" in page and f'href="{path}">Rejoin Acme</a>' in page
    assert "Your recovery codes" in page and "Set up an authenticator app" not in page
    assert (await client.get("/organizations/acme/")).status == 404  # not before the button

    button = await (await client.get(path)).text()
    assert "Rejoin Acme</button>" in button
    pressed = await client.post(path, allow_redirects=False)
    assert pressed.status == 303 and pressed.headers["Location"] == "/organizations/acme/"

    org_page = await client.get("/organizations/acme/")
    page = await org_page.text()
    assert org_page.status == 200
    assert "<h1>Acme</h1>" in page and "admin" in page and "Your organizations" in page
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select user_id, role from members where id = $1", member_id)
    assert row["user_id"] is not None and row["role"] == "admin"

    # The link is used up.
    used = await client.get(path)
    assert used.status == 400 and "Invalid invite code" in await used.text()

    # Signing out and in again asks for the second factor.
    out = await client.post("/auth/logout/", allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/auth/login/"
    first = await client.post(
        "/auth/login/", data={"email": "alice@example.com", "password": PASSWORD}
    )
    page = await first.text()
    assert first.status == 200 and 'name="otp"' in page
    assert (await client.get("/account/security/", allow_redirects=False)).status == 303
    second = await client.post(
        "/auth/login/", data={"otp": totp_code(secret, 1)}, allow_redirects=False
    )
    assert second.status == 303 and second.headers["Location"] == "/"
    assert (await client.get("/organizations/acme/")).status == 200


async def test_register_then_rejoin_with_the_button(client, pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    # Bob's old membership is pending under his email, from before the account it was removed
    # from was recorded (so the link is not tied to one account).
    bob = await create_user(pool, "bob@example.com")
    member_id = await add_member(pool, org["id"], bob)
    path = urlsplit(await remove_for_2fa(pool, member_id, settings)).path
    async with pool.acquire() as conn:
        await conn.execute(
            """update members set email = 'bobby@example.com', removed_user_id = null
               where id = $1""",
            member_id,
        )

    assert (await client.get(path)).status == 200  # remembered in the session
    bad = await client.post("/auth/register/", data={"email": "not an email", "password": "short"})
    assert bad.status == 400 and 'class="error"' in await bad.text()
    registered = await client.post(
        "/auth/register/",
        data={"email": "bobby@example.com", "password": PASSWORD, "name": "Bobby"},
        allow_redirects=False,
    )
    assert registered.status == 303 and registered.headers["Location"] == path

    page = await (await client.get(path)).text()
    assert "Rejoin Acme</button>" in page
    joined = await client.post(path, allow_redirects=False)
    assert joined.status == 303 and joined.headers["Location"] == "/organizations/acme/"
    page = await (await client.get("/organizations/acme/")).text()
    assert "<h1>Acme</h1>" in page and "member" in page


async def test_organization_page_asks_a_member_without_2fa_to_set_it_up(client, pool) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com")
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = true where id = $1", org["id"])
    await client.post("/auth/login/", data={"email": "owner@example.com", "password": PASSWORD})
    page = await (await client.get("/organizations/acme/")).text()
    assert "requires two-factor authentication" in page and 'href="/account/security/"' in page
    missing = await client.get("/organizations/nope/")
    assert missing.status == 404 and missing.content_type == "text/html"


async def test_bad_and_expired_links(client, pool, settings) -> None:
    _, member_id, path = await seed(pool, settings)
    invalid = await client.get(f"/accept/{member_id}/not-the-token/")
    assert invalid.status == 400 and invalid.content_type == "text/html"
    assert "Invalid invite code" in await invalid.text()
    nonsense = await client.get("/accept/abc/def/")
    assert nonsense.status == 400 and "Invalid invite code" in await nonsense.text()

    async with pool.acquire() as conn:
        await conn.execute(
            "update members set reinstate_by = now() - interval '1 second' where id = $1",
            member_id,
        )
    expired = await client.get(path)
    assert expired.status == 410 and "This invitation has expired" in await expired.text()


async def test_forms_from_another_site_are_refused(client, pool, settings) -> None:
    await create_user(pool, "alice@example.com")
    form = {"email": "alice@example.com", "password": PASSWORD}
    crossed = await client.post(
        "/auth/login/", data=form, headers={"Origin": "http://evil.example"}
    )
    assert crossed.status == 403 and crossed.content_type == "text/html"
    refused = await crossed.text()
    assert 'href="/static/app.css"' in refused  # the styled error page, not a bare 403
    assert "This form was sent from http://evil.example, but this site is http://testserver." in (
        refused
    )
    assert "Open http://testserver/ and send the form from there." in refused
    assert (await client.get("/account/security/", allow_redirects=False)).status == 303
    ours = await client.post(
        "/auth/login/",
        data={**form, "next": "//evil.example/"},
        headers={"Origin": "http://testserver"},
        allow_redirects=False,
    )
    assert ours.status == 303 and ours.headers["Location"] == "/"


async def test_sign_in_page_goes_back_where_it_was_asked_from(client, pool) -> None:
    await create_user(pool, "alice@example.com")
    away = await client.get("/account/security/", allow_redirects=False)
    assert away.status == 303 and away.headers["Location"] == "/auth/login/?next=/account/security/"
    wrong = await client.post(
        "/auth/login/", data={"email": "alice@example.com", "password": "nope-nope"}
    )
    assert wrong.status == 401 and "Invalid email or password." in await wrong.text()


async def test_development_accepts_forms_from_each_loopback_spelling(
    aiohttp_client, pool, settings
) -> None:
    from api.app import create_app

    client = await aiohttp_client(create_app(settings.replace(base_url="http://localhost:8000")))
    await create_user(pool, "alice@example.com")
    form = {"email": "alice@example.com", "password": PASSWORD}
    for origin in ("http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"):
        signed = await client.post(
            "/auth/login/", data=form, headers={"Origin": origin}, allow_redirects=False
        )
        assert signed.status == 303, origin
    for origin in ("http://127.0.0.1:9000", "https://localhost:8000", "http://localhost.evil"):
        refused = await client.post(
            "/auth/login/", data=form, headers={"Origin": origin}, allow_redirects=False
        )
        assert refused.status == 403, origin
