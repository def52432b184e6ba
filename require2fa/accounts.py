"""Accounts: creating one, checking a password (rate limited), re-authentication for sensitive
changes, changing the password. Signing the session in or out is the adapter's."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from db import authenticators, sessions, users
from require2fa import factors, ratelimit, reauth
from require2fa.errors import Conflict, Invalid, NotFound, NotSignedIn, TooMany
from require2fa.ratelimit import Limit
from require2fa.security import hash_password, verify_password
from require2fa.settings import Settings

# Password attempts per (client address, account as typed, so unknown accounts count too):
# failures against one account never hold back another, and nobody can lock an account from
# addresses other than their own. A success clears its counter.
LOGIN_LIMIT = Limit("login", 10, 900)
# Wrong passwords per account from every address together (issue 25, point 9). Past the limit,
# each address gets one attempt on that account per turn, the turn doubling with each further
# failure up to 15 minutes: a guesser with many addresses is slowed to a few guesses an hour per
# address, while whoever types the right password from an address that has not just failed is
# checked at once (never locked out; docs/SECURITY.md). A success clears the count.
LOGIN_ACCOUNT_FAILURES = Limit("login-account", 20, 3600)
LOGIN_ACCOUNT_FIRST_TURN = 5  # seconds
LOGIN_ACCOUNT_MAX_TURN = 900
SESSION_NOT_FOUND = "The requested session does not exist."


async def create(pool: asyncpg.Pool, *, email: str, name: str, password: str) -> asyncpg.Record:
    """Writes the user (with `has2fa`); `Conflict` when the email is taken."""
    async with pool.acquire() as conn:
        user = await users.create(
            conn, email=email, name=name, password_hash=hash_password(password)
        )
        if user is None:
            raise Conflict("email-taken", "An account with this email already exists.")
        user = await users.by_id(conn, user["id"])
    assert user is not None
    return user


def login_key(address: str | None, email: str) -> str:
    """The (address, account) key of password attempts."""
    return f"{address or '-'}|{email.strip().lower()}"


async def check_password(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    *,
    email: str,
    password: str,
    address: str | None,
) -> asyncpg.Record:
    """The user whose password this is (with `has2fa`). Each attempt counts against the
    (client address, account) pair before the password is checked, so that parallel attempts
    cannot pass the limit: `NotSignedIn`, or `TooMany` once over. A success clears the count."""
    key = login_key(address, email)
    verdict = await ratelimit.hit(redis, settings.redis_namespace, LOGIN_LIMIT, key)
    if not verdict.allowed:
        raise TooMany(
            "login-limited",
            "Too many failed sign-in attempts",
            retry_after=verdict.retry_after,
        )
    account = email.strip().lower()
    await _wait_turn(redis, settings, account, key)
    async with pool.acquire() as conn:
        user = await users.by_email(conn, email)
        if not verify_password(user["password_hash"] if user else None, password):
            await ratelimit.hit(redis, settings.redis_namespace, LOGIN_ACCOUNT_FAILURES, account)
            raise NotSignedIn("bad-password", "Invalid email or password.")
        assert user is not None
        user = await users.by_id(conn, user["id"])
        assert user is not None
    await ratelimit.reset(redis, settings.redis_namespace, LOGIN_LIMIT, key)
    await ratelimit.reset(redis, settings.redis_namespace, LOGIN_ACCOUNT_FAILURES, account)
    return user


async def _wait_turn(redis: aioredis.Redis, settings: Settings, account: str, key: str) -> None:
    """Past `LOGIN_ACCOUNT_FAILURES`, one attempt per (address, account) per turn: `TooMany`
    with the seconds to wait."""
    namespace = settings.redis_namespace
    failures = await ratelimit.count(redis, namespace, LOGIN_ACCOUNT_FAILURES, account)
    over = failures - LOGIN_ACCOUNT_FAILURES.limit
    if over < 0:
        return
    turn = min(LOGIN_ACCOUNT_FIRST_TURN * 2 ** min(over, 16), LOGIN_ACCOUNT_MAX_TURN)
    wait = await ratelimit.take_turn(redis, namespace, "login-account", key, turn)
    if wait:
        raise TooMany(
            "login-slowed",
            "Many wrong passwords were tried for this account",
            retry_after=wait,
        )


async def reauthenticate(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user: asyncpg.Record,
    *,
    password: str | None = None,
    otp: str | None = None,
    address: str | None,
) -> None:
    """Checks `password` or `otp` (exactly one) for `user`: `Invalid` when neither or both,
    `NotSignedIn` (`sudo-required`) when wrong, `TooMany` once over the limits. The caller
    records the re-authentication."""
    if (password is None) == (otp is None):
        raise Invalid(
            "reauth-missing", "Send either your password or a code (otp).", field="password"
        )
    if password is not None:
        try:
            await check_password(
                pool, redis, settings, email=user["email"], password=password, address=address
            )
        except NotSignedIn:
            raise NotSignedIn(reauth.REQUIRED_CODE, "Invalid password.") from None
        return
    assert otp is not None
    if await factors.check_code(pool, redis, settings, user["id"], otp) is None:
        wrong = await factors.wrong_code(pool, settings, user["id"], otp)
        raise NotSignedIn(reauth.REQUIRED_CODE, wrong)


async def change_password(
    pool: asyncpg.Pool,
    user_id: int,
    *,
    password: str,
    keep_session: int | None,
    keep_token: int | None = None,
) -> None:
    """Sets a new password and ends the user's sessions but `keep_session` and revokes their API
    tokens but `keep_token` (the credential the change was made with): someone who learnt the
    old password could have made a token with it (docs/SECURITY.md). The caller has checked the
    current one (`reauthenticate`)."""
    async with pool.acquire() as conn, conn.transaction():
        await users.set_password(conn, user_id, hash_password(password))
        await sessions.end_others(conn, user_id, keep=keep_session)
        await authenticators.revoke_tokens(conn, user_id, keep=keep_token)


# --- Sessions -------------------------------------------------------------------------------


async def sessions_of(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The user's signed-in sessions (browsers)."""
    async with pool.acquire() as conn:
        return await sessions.for_user(conn, user_id)


async def end_other_sessions(pool: asyncpg.Pool, user_id: int, *, keep: int | None) -> int:
    """Ends every session of the user but `keep`; how many ended."""
    async with pool.acquire() as conn:
        return await sessions.end_others(conn, user_id, keep=keep)


async def end_session(pool: asyncpg.Pool, user_id: int, session_id: int) -> None:
    """Ends one of the user's sessions; `NotFound`."""
    async with pool.acquire() as conn:
        if not await sessions.end(conn, user_id, session_id):
            raise NotFound("session-not-found", SESSION_NOT_FOUND)


async def user(pool: asyncpg.Pool, user_id: int) -> asyncpg.Record:
    """The user (with `has2fa`)."""
    async with pool.acquire() as conn:
        found = await users.by_id(conn, user_id)
    assert found is not None
    return found
