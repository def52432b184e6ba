"""A person's second factors as signing in uses them: which they have, checking a code (TOTP,
sign-in SMS, recovery code), texting a sign-in code, and the rate limits of codes tried and texts
sent. Adding, replacing and removing factors is `require2fa.enrollment`; security keys and
passkeys are `require2fa.security_keys`.

Each function is one use case that the API handlers, the pages and the CLI call alike; refusals
are `require2fa.errors`.
"""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
import structlog

from db import authenticators
from require2fa import caps, compliance, ratelimit, sms, totp
from require2fa.errors import TooMany, Unavailable
from require2fa.ratelimit import Limit
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

# Second-factor attempts (sign-in step and enrollment confirmations), per user.
SECOND_FACTOR_BURST = Limit("2fa-burst", 5, 20)
SECOND_FACTOR_HOURLY = Limit("2fa-hour", 20, 3600)

LAST_FACTOR = "Cannot delete authenticator because organization requires 2FA"


def last_factor(org_name: str, level: str) -> str:
    """The refusal to remove a factor that `org_name`'s requirement at `level` needs: the
    sentence of `LAST_FACTOR`, naming the organization and the level."""
    return (
        f"{LAST_FACTOR}: {org_name} requires two-factor authentication at level {level},"
        f" which needs {compliance.needs(level)}."
    )


INVALID_CODE = "Invalid verification code."
RECOVERY_CODE_USED = "This recovery code was already used; each one signs you in once."
SMS_FAILED = "The text message could not be sent; try again later."
NOT_FOUND = "The requested authenticator does not exist."


# --- Rate limits --------------------------------------------------------------------------


async def count_attempt(redis: aioredis.Redis, settings: Settings, user_id: int) -> None:
    """Counts one second-factor attempt of the user; `TooMany` once over either limit."""
    for rule in (SECOND_FACTOR_BURST, SECOND_FACTOR_HOURLY):
        await _hit(redis, settings, rule, user_id, "Too many codes tried")


async def attempt_succeeded(redis: aioredis.Redis, settings: Settings, user_id: int) -> None:
    """A right code clears the counters (only the owner of the factor can produce one)."""
    for rule in (SECOND_FACTOR_BURST, SECOND_FACTOR_HOURLY):
        await ratelimit.reset(redis, settings.redis_namespace, rule, str(user_id))


async def _hit(
    redis: aioredis.Redis, settings: Settings, rule: Limit, user_id: int, detail: str
) -> None:
    verdict = await ratelimit.hit(redis, settings.redis_namespace, rule, str(user_id))
    if not verdict.allowed:
        raise TooMany(f"{rule.name}-limited", detail, retry_after=verdict.retry_after)


# --- Signing in ---------------------------------------------------------------------------


async def listed(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The user's confirmed factors, oldest first."""
    async with pool.acquire() as conn:
        return await authenticators.for_user(conn, user_id)


async def interfaces(pool: asyncpg.Pool, user_id: int) -> list[str]:
    """The kinds of confirmed factor the user has (what the second step of signing in offers)."""
    async with pool.acquire() as conn:
        return await authenticators.kinds(conn, user_id)


async def verify_second_factor(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, user_id: int, otp: str
) -> asyncpg.Record | None:
    """The factor that `otp` is a good code of (TOTP, sign-in SMS or recovery code), now used
    up so that it cannot be used again; None when it is no good."""
    otp = "".join(otp.split())
    async with pool.acquire() as conn:
        if len(otp) == totp.DIGITS and otp.isdigit():
            for factor in await authenticators.of_type(conn, user_id, "totp"):
                secret = totp.decrypt_secret(settings.secret_key, factor["secret_encrypted"])
                step = totp.matching_step(secret, otp) if secret else None
                if step is not None and await authenticators.claim_totp_step(
                    conn, factor["id"], step
                ):
                    return factor
            for factor in await authenticators.of_type(conn, user_id, "sms"):
                if await sms.take_code(
                    redis,
                    settings,
                    purpose="login",
                    user_id=user_id,
                    binding=str(factor["id"]),
                    code=otp,
                ):
                    await authenticators.touch(conn, factor["id"])
                    return factor
            return None
        code = totp.normalize_recovery_code(otp)
        if code is None:
            return None
        used = await authenticators.use_recovery_code(
            conn, user_id, totp.recovery_code_hash(settings.secret_key, code)
        )
        return await authenticators.get(conn, user_id, used) if used else None


async def wrong_code(pool: asyncpg.Pool, settings: Settings, user_id: int, otp: str) -> str:
    """What to tell the person whose code `verify_second_factor` refused: that it is one of
    their recovery codes, already used, or `INVALID_CODE`. Only for someone past the password
    step (or signed in): it says something about the account's codes."""
    code = totp.normalize_recovery_code("".join(otp.split()))
    if code is None:
        return INVALID_CODE
    async with pool.acquire() as conn:
        spent = await authenticators.recovery_code_spent(
            conn, user_id, totp.recovery_code_hash(settings.secret_key, code)
        )
    return RECOVERY_CODE_USED if spent else INVALID_CODE


async def check_code(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, user_id: int, otp: str
) -> asyncpg.Record | None:
    """`verify_second_factor` counted against the user's attempts (`TooMany` once over); a
    good code clears the count. The factor, or None."""
    await count_attempt(redis, settings, user_id)
    factor = await verify_second_factor(pool, redis, settings, user_id, otp)
    if factor is not None:
        await attempt_succeeded(redis, settings, user_id)
    return factor


async def send_login_code(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, user_id: int
) -> asyncpg.Record | None:
    """Texts a sign-in code to the user's backup phone; the SMS factor, or None if they have
    none. `TooMany` over the limit; `Unavailable` when the gateway fails."""
    async with pool.acquire() as conn:
        factors = await authenticators.of_type(conn, user_id, "sms")
    if not factors:
        return None
    factor = factors[0]
    phone = sms.open_phone(settings.secret_key, factor["phone"])
    if not factor["phone"].startswith(sms.SEALED):  # written before numbers were sealed
        async with pool.acquire() as conn:
            await authenticators.set_phone(
                conn, factor["id"], sms.seal_phone(settings.secret_key, phone)
            )
    await caps.count_sms(redis, settings, user_id=user_id, phone=phone)
    code = sms.new_code()
    await sms.store_code(
        redis, settings, purpose="login", user_id=user_id, binding=str(factor["id"]), code=code
    )
    await send_code(settings, phone, code)
    return factor


async def send_code(settings: Settings, phone: str, code: str) -> None:
    body = f"Your require2fa verification code is {code}. It expires in 5 minutes."
    try:
        await sms.send(settings, phone, body)
    except sms.SmsError as err:
        log.warning("sms.failed", error=str(err))
        raise Unavailable("sms-failed", SMS_FAILED) from None
