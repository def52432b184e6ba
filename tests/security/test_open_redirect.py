"""Open redirect: `next` (query of the sign-in page, form field of sign-in and sign-up) only ever
sends a person to a path of this site; anything else goes to the default page."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.factories import PASSWORD, create_user

DEFAULT = "/"  # your organizations

# What an attacker puts in `next` (before URL encoding), each of which a browser reads, or might
# read, as another site.
BYPASSES = [
    "//evil.example",
    "//evil.example/path",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/ /evil.example",
    "/%09/evil.example",  # encoded twice: a decoding proxy or browser makes it the one above
    "/%0a/evil.example",
    "\\\\evil.example",
    "\\evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "https:evil.example",
    "https://evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
    "/%2F%2Fevil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "evil.example",
    "\x01/evil.example",
    "/\x7f/evil.example",
    "/\u3000/evil.example",  # ideographic space
    "/\u2028/evil.example",  # line separator
    "/\uff0f\uff0fevil.example",  # fullwidth solidus: looks like //
    "/\u2215\u2215evil.example",  # division slash
    "/\u200b/evil.example",  # zero-width space
    "\u3002evil.example",
    " //evil.example",
]

# Paths of this site that are kept as they are.
KEPT = ["/organizations/acme/", "/accept/12/abc-DEF_09/", "/account/security/?tab=1#codes"]


def _query(value: str) -> str:
    return quote(value, safe="")


@pytest.mark.parametrize("target", BYPASSES + KEPT)
async def test_signed_in_get_of_the_login_page(client, pool, target) -> None:
    await create_user(pool, "ada@example.com")
    signed = await client.post(
        "/api/0/auth/login/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert signed.status == 200
    response = await client.get(f"/auth/login/?next={_query(target)}", allow_redirects=False)
    assert response.status == 303
    expected = target if target in KEPT else DEFAULT
    assert response.headers["Location"] == expected, (target, response.headers["Location"])


@pytest.mark.parametrize("target", BYPASSES + KEPT)
async def test_login_form_next(client, pool, target) -> None:
    await create_user(pool, "ada@example.com")
    response = await client.post(
        "/auth/login/",
        data={"email": "ada@example.com", "password": PASSWORD, "next": target},
        allow_redirects=False,
    )
    assert response.status == 303
    expected = target if target in KEPT else DEFAULT
    assert response.headers["Location"] == expected, (target, response.headers["Location"])


@pytest.mark.parametrize("target", BYPASSES)
async def test_register_form_next(client, pool, target) -> None:
    response = await client.post(
        "/auth/register/",
        data={"email": "new@example.com", "password": PASSWORD, "name": "New", "next": target},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == DEFAULT, (target, response.headers["Location"])


@pytest.mark.parametrize("target", BYPASSES)
async def test_login_page_does_not_echo_a_bad_next(client, target) -> None:
    """The form's hidden `next` (and the sign-up link) drop what would not be followed."""
    page = await (await client.get(f"/auth/login/?next={_query(target)}")).text()
    assert 'name="next" value=""' in page
