"""Security keys and passkeys (WebAuthn) as second factors: registering one, and the challenge
and answer of signing in or re-authenticating with one. The ceremonies themselves (options,
verification, challenges in Redis) are `require2fa.webauthn`.

A challenge is filed under a *binding*: what ties it to the one asking (a random value kept in
the browser session, or the API token). The adapter owns the binding and hands it in as a
function, called at the point of the ceremony where the binding is made or read, so that a
refused request changes nothing in the session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog

from db import authenticators, users
from require2fa import webauthn
from require2fa.enrollment import Enrolled, confirm_factor
from require2fa.errors import Conflict, Invalid
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

KEY_NOT_ACCEPTED = "The security key's answer could not be verified; try again."
KEY_TAKEN = "This security key is already registered."
MAX_KEYS = 20

# Makes (or reads) the binding of a challenge; the held binding is None when there is none.
NewBinding = Callable[[], Awaitable[str]]
HeldBinding = Callable[[], Awaitable[str | None]]


def _credentials(rows: list[asyncpg.Record]) -> list[tuple[bytes, list[str] | None]]:
    return [(bytes(row["credential_id"]), row["transports"]) for row in rows]


def _too_many() -> Conflict:
    return Conflict(
        "too-many-keys", f"You have {MAX_KEYS} security keys; remove one to add another."
    )


async def registration_options(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user: asyncpg.Record,
    binding: NewBinding,
) -> dict[str, Any]:
    """Creation options for a new key, with a challenge filed under `binding`; nothing else
    stored. `Conflict` at `MAX_KEYS`."""
    async with pool.acquire() as conn:
        keys = await authenticators.of_type(conn, user["id"], "webauthn")
    if len(keys) >= MAX_KEYS:
        raise _too_many()
    challenge = webauthn.new_challenge()
    await webauthn.store_challenge(
        redis,
        settings,
        purpose=webauthn.REGISTER,
        binding=await binding(),
        user_id=user["id"],
        challenge=challenge,
    )
    return webauthn.registration_options(
        settings,
        user_id=user["id"],
        email=user["email"],
        display_name=user["name"],
        existing=_credentials(keys),
        challenge=challenge,
    )


async def register(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user: asyncpg.Record,
    binding: HeldBinding,
    *,
    credential: dict[str, Any],
    name: str,
) -> Enrolled:
    """Verifies a registration response against the challenge filed under `binding` (spent
    either way) and writes the key, the first recovery codes and a security notice (wake the
    dispatcher). `Invalid` when it does not verify, `Conflict` (`MAX_KEYS`, `KEY_TAKEN`)."""
    held = await binding()
    if held is None:
        raise Invalid("key-not-accepted", KEY_NOT_ACCEPTED)
    try:
        challenge = await webauthn.take_challenge(
            redis, settings, purpose=webauthn.REGISTER, binding=held, user_id=user["id"]
        )
        registered = webauthn.verify_registration(settings, credential, challenge)
    except webauthn.CeremonyError as err:
        log.info("webauthn.registration_refused", user_id=user["id"], reason=err.reason)
        raise Invalid("key-not-accepted", KEY_NOT_ACCEPTED) from None
    async with pool.acquire() as conn, conn.transaction():
        await users.lock(conn, [user["id"]])
        if len(await authenticators.of_type(conn, user["id"], "webauthn")) >= MAX_KEYS:
            raise _too_many()
        factor = await authenticators.insert_webauthn(
            conn,
            user_id=user["id"],
            name=" ".join(name.split()) or "Security key",
            credential_id=registered.credential_id,
            public_key=registered.public_key,
            sign_count=registered.sign_count,
            transports=registered.transports,
        )
        if factor is None:
            raise Conflict("key-taken", KEY_TAKEN)
        return await confirm_factor(conn, settings, user, factor)


async def authentication_options(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user_id: int,
    binding: NewBinding,
    *,
    purpose: str,
) -> dict[str, Any]:
    """Starts a sign-in (or re-authentication) with one of the user's keys: a challenge filed
    under `binding`, and the request options naming their keys. `Invalid` when they have none."""
    async with pool.acquire() as conn:
        keys = await authenticators.of_type(conn, user_id, "webauthn")
    if not keys:
        raise Invalid("no-security-key", "No security key is set up for this account.")
    challenge = webauthn.new_challenge()
    await webauthn.store_challenge(
        redis,
        settings,
        purpose=purpose,
        binding=await binding(),
        user_id=user_id,
        challenge=challenge,
    )
    return webauthn.authentication_options(
        settings, credentials=_credentials(keys), challenge=challenge
    )


async def verify(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user_id: int,
    binding: HeldBinding,
    *,
    credential: dict[str, Any],
    purpose: str,
) -> asyncpg.Record | None:
    """The user's key that signed `credential` (an authentication response) over the challenge
    filed under `binding` for `purpose`, its counter now recorded; None when it does not verify
    (no such challenge, used already, another origin or RP id, a bad signature, a key that is not
    theirs, a counter that did not go forward). The challenge is spent either way."""
    held = await binding()
    if held is None:
        log.info("webauthn.refused", user_id=user_id, reason="none")
        return None
    try:
        challenge = await webauthn.take_challenge(
            redis, settings, purpose=purpose, binding=held, user_id=user_id
        )
        credential_id = webauthn.credential_id_of(credential)
    except webauthn.CeremonyError as err:
        log.info("webauthn.refused", user_id=user_id, reason=err.reason)
        return None
    async with pool.acquire() as conn:
        key = await authenticators.webauthn_by_credential(conn, user_id, credential_id)
        if key is None:
            log.info("webauthn.refused", user_id=user_id, reason="unknown credential")
            return None
        try:
            asserted = webauthn.verify_authentication(
                settings,
                credential,
                challenge,
                public_key=bytes(key["public_key"]),
                sign_count=key["sign_count"],
            )
        except webauthn.CeremonyError as err:
            log.info("webauthn.refused", user_id=user_id, reason=err.reason)
            return None
        if not await authenticators.claim_webauthn_counter(
            conn, key["id"], key["sign_count"], asserted.new_sign_count
        ):
            log.info("webauthn.refused", user_id=user_id, reason="counter did not advance")
            return None
        return await authenticators.get(conn, user_id, key["id"])
