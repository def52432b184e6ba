"""What a removed or blocked member sees on `/`, the favicon, and the security page's order,
device names and recovery-code step."""

from __future__ import annotations

import re

from tests.api.test_policy import ORG, acme, run_to_the_end, set_action
from tests.factories import (
    PASSWORD,
    add_member,
    create_user,
    enroll_totp,
    owner_and_org,
    remove_for_2fa,
    sign_in,
    totp_code,
)


async def test_a_removed_member_sees_which_organization_and_what_to_do(
    client, pool, settings
) -> None:
    _owner, org = await owner_and_org(pool, "acme", "owner@example.com", name="Acme")
    alice = await create_user(pool, "alice@example.com")
    member_id = await add_member(pool, org["id"], alice)
    await remove_for_2fa(pool, member_id, settings)
    assert (await sign_in(client, "alice@example.com")).status == 200
    page = await (await client.get("/")).text()
    assert "Acme removed you until you set up two-factor authentication" in page
    assert 'href="/account/security/">Set up two-factor authentication</a>' in page
    assert "Mandatory: Enable Two-Factor Authentication" in page and "alice@example.com" in page
    assert "You are not a member of any organization yet." not in page

    await enroll_totp(client)
    page = await (await client.get("/")).text()
    assert "Done:" in page and "you have two-factor authentication" in page


async def test_a_blocked_member_sees_which_organization_and_that_a_factor_is_enough(
    client, pool, settings, broker
) -> None:
    headers, _ = await acme(pool)
    await set_action(pool, "block")
    enabled = await client.put(ORG, json={"require2FA": True}, headers=headers)
    await run_to_the_end(pool, settings, enabled)
    assert (await sign_in(client, "backend@example.com")).status == 200
    page = await (await client.get("/")).text()
    assert "Acme blocked your access until you set up two-factor authentication" in page
    assert 'href="/account/security/">Set up two-factor authentication</a>' in page
    assert "your access to Acme comes back at once, with no link to follow" in page
    assert "removed you" not in page and "Mandatory: Enable" not in page
    assert (await client.get("/organizations/acme/members/")).status == 401

    await enroll_totp(client)
    page = await (await client.get("/")).text()
    assert "blocked your access" not in page
    assert (await client.get("/organizations/acme/members/")).status == 200


async def test_favicon_and_the_security_page(client, pool) -> None:
    icon = await client.get("/favicon.ico")
    assert icon.status == 200 and (await icon.read())[:4] == b"\x00\x00\x01\x00"

    await create_user(pool, "ada@example.com")
    chrome = (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36"
        " (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    )
    response = await client.post(
        "/api/0/auth/login/",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"User-Agent": chrome},
    )
    assert response.status == 200
    page = await (await client.get("/account/security/")).text()
    assert "Chrome 131 on Mac OS X" in page and "AppleWebKit" not in page
    assert page.index("Set up an authenticator app") < page.index("<h2>Sessions</h2>")
    assert 'href="#setup-totp"' in page

    # Set up through the page: the recovery codes come with Copy, Print and "I saved them".
    secret = re.search(r'name="secret" value="([A-Z2-7]+)"', page)
    assert secret is not None
    done = await client.post(
        "/account/security/totp/",
        data={"secret": secret[1], "otp": totp_code(secret[1], 0)},
    )
    text = await done.text()
    assert "Your recovery codes" in text and "data-copy" in text and "data-print" in text
    assert '<a class="button" href="/account/security/">I saved them</a>' in text
    assert "Your recovery codes" not in await (await client.get("/account/security/")).text()
