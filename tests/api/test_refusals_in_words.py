"""Refusals that say what happened: a rate limit names its wait (the same seconds as its
`Retry-After`), on the API and on the pages; a recovery code used a second time says so, to the
person past the password step only."""

from __future__ import annotations

import re
from html import unescape

import pytest

from require2fa.errors import wait_in_words
from require2fa.factors import INVALID_CODE, RECOVERY_CODE_USED
from tests.factories import PASSWORD, totp_code

ENROLL = "/api/0/users/me/authenticators/totp/enroll/"


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (20, "20 seconds"),
        (60, "1 minute"),
        (61, "61 seconds"),
        (90, "2 minutes"),
        (900, "15 minutes"),
        (3600, "1 hour"),
        (3601, "61 minutes"),
        (5400, "2 hours"),
        (86_400, "24 hours"),
        (0, "1 second"),
    ],
)
def test_a_wait_in_words_is_never_shorter_than_it_is(seconds: int, words: str) -> None:
    assert wait_in_words(seconds) == words


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


async def _account_with_recovery_codes(client, email: str) -> tuple[str, list[str]]:
    registered = await client.post(
        "/api/0/auth/register/", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert registered.status == 201
    secret = (await (await client.post(ENROLL, json={})).json())["secret"]
    confirmed = await client.post(ENROLL, json={"secret": secret, "otp": totp_code(secret)})
    assert confirmed.status == 201
    return secret, (await confirmed.json())["recoveryCodes"]


async def test_the_sign_in_page_names_the_wait_of_its_limits(client, pool) -> None:
    await _account_with_recovery_codes(client, "ada@example.com")
    await client.post("/api/0/auth/logout/")
    form = {"email": "ada@example.com", "password": "not the password"}
    for _ in range(10):
        assert (await client.post("/auth/login/", data=form)).status == 401
    limited = await client.post("/auth/login/", data=form)
    assert limited.status == 429
    seconds = int(limited.headers["Retry-After"])
    assert 0 < seconds <= 900
    said = _text(await limited.text())
    assert f"Too many failed sign-in attempts; try again in {wait_in_words(seconds)}." in said


async def test_the_second_step_names_its_wait_on_the_page_and_in_the_api(client, pool) -> None:
    await _account_with_recovery_codes(client, "ada@example.com")
    await client.post("/api/0/auth/logout/")
    signed = await client.post(
        "/auth/login/", data={"email": "ada@example.com", "password": PASSWORD}
    )
    assert signed.status == 200 and 'name="otp"' in await signed.text()
    for _ in range(5):
        wrong = await client.post("/auth/login/", data={"otp": "000000"})
        assert wrong.status == 400 and INVALID_CODE in await wrong.text()
    page = await client.post("/auth/login/", data={"otp": "000000"})
    assert page.status == 429
    wait = wait_in_words(int(page.headers["Retry-After"]))
    assert f"Too many codes tried; try again in {wait}." in _text(await page.text())

    api = await client.post("/api/0/auth/2fa/", json={"otp": "000000"})
    assert api.status == 429
    detail = (await api.json())["detail"]
    assert (
        detail
        == f"Too many codes tried; try again in {wait_in_words(int(api.headers['Retry-After']))}."
    )


async def test_a_recovery_code_used_twice_says_so_after_the_password(
    client, aiohttp_client, settings
) -> None:
    from api.app import create_app

    _, codes = await _account_with_recovery_codes(client, "ada@example.com")
    await client.post("/api/0/auth/logout/")

    # Used once through the API: signed in.
    assert (
        await client.post(
            "/api/0/auth/login/", json={"email": "ada@example.com", "password": PASSWORD}
        )
    ).status == 401
    assert (await client.post("/api/0/auth/2fa/", json={"otp": codes[0]})).status == 200
    await client.post("/api/0/auth/logout/")

    # The same code again, past the password step: the API and the page say it was used.
    await client.post("/api/0/auth/login/", json={"email": "ada@example.com", "password": PASSWORD})
    again = await client.post("/api/0/auth/2fa/", json={"otp": codes[0].upper()})
    assert again.status == 401 and (await again.json())["detail"] == RECOVERY_CODE_USED
    page = await client.post("/auth/login/", data={"otp": codes[0]})
    assert page.status == 400 and RECOVERY_CODE_USED in _text(await page.text())
    # A code that was never one of hers is just invalid.
    other = await client.post("/auth/login/", data={"otp": "aaaaa-aaaaa"})
    assert other.status == 400 and INVALID_CODE in _text(await other.text())
    # An unused one still works.
    assert (await client.post("/api/0/auth/2fa/", json={"otp": codes[1]})).status == 200

    # Someone without the password learns nothing about the codes.
    stranger = await aiohttp_client(create_app(settings))
    answer = await stranger.post("/api/0/auth/2fa/", json={"otp": codes[0]})
    assert answer.status == 401 and RECOVERY_CODE_USED not in await answer.text()


async def test_the_members_page_counts_invitations_against_the_caps(client, pool) -> None:
    """Inviting from the page is capped as the API is (`caps.INVITES_PER_ACCOUNT`), and the
    page says the wait with its `Retry-After`."""
    from require2fa.caps import INVITES_PER_ACCOUNT
    from tests.api.test_members_page import MEMBERS, owner_signed_in

    await owner_signed_in(client, pool)
    for n in range(INVITES_PER_ACCOUNT.limit):
        sent = await client.post(
            MEMBERS + "invite/",
            data={"email": f"guest{n}@example.com", "role": "member"},
            allow_redirects=False,
        )
        assert sent.status == 303, await sent.text()
    over = await client.post(
        MEMBERS + "invite/",
        data={"email": "one-more@example.com", "role": "member"},
        allow_redirects=False,
    )
    assert over.status == 429
    wait = wait_in_words(int(over.headers["Retry-After"]))
    said = _text(await over.text())
    assert (
        f"You have sent {INVITES_PER_ACCOUNT.limit} invitations today; try again in {wait}." in said
    )
    async with pool.acquire() as conn:
        assert not await conn.fetchval(
            "select count(*) from members where email = 'one-more@example.com'"
        )
