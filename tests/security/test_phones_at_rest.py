"""Phone numbers at rest (issue 25, point 12): `authenticators.phone` holds the number sealed
under a key derived from SECRET_KEY; lists show the masked number; sign-in codes still reach
the phone, and a number stored before sealing is sealed the next time it gets a code."""

from __future__ import annotations

import re
from pathlib import Path

from api.keys import SETTINGS
from require2fa import sms
from require2fa.settings import DEV_SECRET_KEY
from tests.factories import PASSWORD, create_user, sign_in

SMS = "/api/0/users/me/authenticators/sms/enroll/"
PHONE = "+14155550123"


def _code(client) -> tuple[str, str]:
    """The latest text of the development gateway (`console:`), as the dev mailbox shows it:
    (to, code). Read from its file rather than from captured log lines, which a logger cached
    by an earlier test in the same process would not reach."""
    sent = sms.console_messages(Path(client.app[SETTINGS].data_dir))
    assert sent
    match = re.search(r"\b(\d{6})\b", sent[0]["body"])
    assert match
    return sent[0]["to"], match.group(1)


async def _stored(pool) -> str:
    async with pool.acquire() as conn:
        return await conn.fetchval("select phone from authenticators where type = 'sms'")


async def test_the_number_is_sealed_and_codes_still_reach_it(client, pool) -> None:
    await create_user(pool, "ada@example.com")
    assert (await sign_in(client, "ada@example.com")).status == 200
    assert (await client.post(SMS, json={"phone": PHONE})).status == 200
    _to, code = _code(client)
    assert (await client.post(SMS, json={"phone": PHONE, "otp": code})).status == 201

    stored = await _stored(pool)
    assert "5550123" not in stored and "4155" not in stored
    assert sms.open_phone(DEV_SECRET_KEY, stored) == PHONE
    listed = await (await client.get("/api/0/users/me/authenticators/")).json()
    assert [f["phone"] for f in listed if f["type"] == "sms"] == ["+1******0123"]

    await client.post("/api/0/auth/logout/")
    first = await sign_in(client, "ada@example.com")
    assert (await first.json())["smsSent"] is True
    to, code = _code(client)
    assert to == PHONE
    assert (await client.post("/api/0/auth/2fa/", json={"otp": code})).status == 200


async def test_a_number_stored_before_sealing_is_sealed_when_next_used(client, pool) -> None:
    user = await create_user(pool, "bob@example.com")
    async with pool.acquire() as conn:  # a row as it was written before migration 0200
        await conn.execute(
            """insert into authenticators (user_id, type, name, phone, phone_hint, confirmed_at)
               values ($1, 'sms', 'Backup phone', $2, '+1******0123', now())""",
            user["id"],
            PHONE,
        )
    first = await client.post(
        "/api/0/auth/login/", json={"email": "bob@example.com", "password": PASSWORD}
    )
    assert (await first.json())["smsSent"] is True
    assert _code(client)[0] == PHONE
    stored = await _stored(pool)
    assert stored.startswith(sms.SEALED) and PHONE not in stored
    assert sms.open_phone(DEV_SECRET_KEY, stored) == PHONE
