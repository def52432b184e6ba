"""Adding, replacing and removing a person's second factors: an authenticator app (TOTP), a
backup phone (SMS), recovery codes; renaming one. Each confirmation writes the first set of
recovery codes when the person has none, unblocks the memberships that the new factor lets back
in (`member.unblocked`), and each change queues a "Security notice" email: the caller wakes the
email dispatcher after it. Security keys and passkeys are
`require2fa.security_keys`, which confirms through `confirm_factor` here.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from db import authenticators, outbox, sessions, users
from db.audit import Actor
from require2fa import caps, compliance, email_contexts, factors, removal, sms, totp
from require2fa.errors import Conflict, Invalid, NotAllowed, NotFound
from require2fa.settings import Settings


@dataclass(frozen=True)
class Enrolled:
    """A factor whose confirmation has committed."""

    factor: asyncpg.Record
    recovery_codes: list[str] | None  # set when this enrollment created the user's first set


# --- Enrolling ----------------------------------------------------------------------------


async def _new_recovery_codes(
    conn: asyncpg.Connection, settings: Settings, user_id: int
) -> tuple[int, list[str]]:
    codes = totp.new_recovery_codes()
    hashes = [
        totp.recovery_code_hash(settings.secret_key, totp.normalize_recovery_code(c) or "")
        for c in codes
    ]
    authenticator_id = await authenticators.replace_recovery_codes(
        conn, user_id=user_id, code_hashes=hashes
    )
    return authenticator_id, codes


async def _security_notice(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    email: str,
    authenticator_id: int,
    action: str,
    factor: str,
    factor_name: str,
) -> None:
    """Queues the "Security notice" email, in the caller's transaction."""
    await outbox.enqueue(
        conn,
        template="security_notice",
        to=email,
        context=email_contexts.security_notice(
            base_url=settings.base_url, action=action, factor=factor, factor_name=factor_name
        ),
        dedupe_key=f"security:{authenticator_id}:{action}",
    )


async def confirm_factor(
    conn: asyncpg.Connection, settings: Settings, user: asyncpg.Record, factor: asyncpg.Record
) -> Enrolled:
    """The rest of a confirmation's transaction (any kind of factor): recovery codes if the
    user has none yet, the security notice, and the user's blocked memberships that the factor
    now satisfies unblocked (`member.unblocked`: back in the moment this commits)."""
    await removal.unblock_released(
        conn, actor=Actor(user_id=user["id"], label=user["email"]), user_id=user["id"]
    )
    codes = None
    if await authenticators.recovery(conn, user["id"]) is None:
        _, codes = await _new_recovery_codes(conn, settings, user["id"])
    await _security_notice(
        conn,
        settings,
        email=user["email"],
        authenticator_id=factor["id"],
        action="added",
        factor=factor["type"],
        factor_name=factor["name"],
    )
    row = await authenticators.get(conn, user["id"], factor["id"])
    return Enrolled(factor=row, recovery_codes=codes)


async def _refuse_second(conn: asyncpg.Connection, user_id: int, type_: str) -> None:
    if await authenticators.of_type(conn, user_id, type_):
        what = "An authenticator app" if type_ == "totp" else "A backup phone"
        raise Conflict("factor-exists", f"{what} is already set up; remove it first to replace it.")


async def new_totp(pool: asyncpg.Pool, user: asyncpg.Record) -> dict[str, str]:
    """A new secret with its otpauth URL and QR code (SVG) for the user; nothing stored.
    `Conflict` when they have an authenticator app already."""
    async with pool.acquire() as conn:
        await _refuse_second(conn, user["id"], "totp")
    fresh = totp.new_secret()
    url = totp.otpauth_url(fresh, user["email"])
    return {"secret": fresh, "otpauthUrl": url, "qrcode": totp.qrcode_svg(url)}


async def confirm_totp(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user: asyncpg.Record,
    *,
    secret_text: str,
    otp: str,
    name: str,
) -> Enrolled:
    """Confirms an authenticator app from its secret and a code (rate limited): writes the
    factor, recovery codes on the first factor and a security notice (wake the dispatcher)."""
    secret = totp.normalize_secret(secret_text)
    if secret is None:
        raise Invalid("secret-missing", "Send back the secret from the first step.", field="secret")
    await factors.count_attempt(redis, settings, user["id"])
    step = totp.matching_step(secret, otp)
    if step is None:
        raise _wrong_code()
    async with pool.acquire() as conn, conn.transaction():
        # The same lock as enforcement's removal: whichever commits second sees the other.
        await users.lock(conn, [user["id"]])
        await _refuse_second(conn, user["id"], "totp")
        factor = await authenticators.insert_totp(
            conn,
            user_id=user["id"],
            name=name,
            secret_encrypted=totp.encrypt_secret(settings.secret_key, secret),
            step=step,
        )
        enrolled = await confirm_factor(conn, settings, user, factor)
    await factors.attempt_succeeded(redis, settings, user["id"])
    return enrolled


def _wrong_code() -> Invalid:
    return Invalid("invalid-code", factors.INVALID_CODE, field="otp", summary=factors.INVALID_CODE)


def _phone(text: str) -> str:
    phone = sms.normalize_phone(text)
    if phone is None:
        raise Invalid(
            "invalid-phone",
            "Enter the number in international format, such as +14155550123.",
            field="phone",
        )
    return phone


async def send_enrollment_code(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user_id: int,
    phone_text: str,
) -> str:
    """Texts a code to the number being added (stored hashed for 5 minutes; rate limited); the
    number in E.164. `Invalid` for a bad number, `Conflict` when a backup phone exists,
    `TooMany`, `Unavailable`."""
    phone = _phone(phone_text)
    async with pool.acquire() as conn:
        await _refuse_second(conn, user_id, "sms")
    await caps.count_sms(redis, settings, user_id=user_id, phone=phone)
    code = sms.new_code()
    await sms.store_code(
        redis, settings, purpose="enroll", user_id=user_id, binding=phone, code=code
    )
    await factors.send_code(settings, phone, code)
    return phone


async def confirm_sms(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    user: asyncpg.Record,
    *,
    phone_text: str,
    otp: str,
) -> Enrolled:
    """Confirms a backup phone with the code texted to it (rate limited): writes the factor,
    recovery codes on the first factor and a security notice (wake the dispatcher)."""
    phone = _phone(phone_text)
    await factors.count_attempt(redis, settings, user["id"])
    taken = await sms.take_code(
        redis, settings, purpose="enroll", user_id=user["id"], binding=phone, code=otp
    )
    if not taken:
        raise _wrong_code()
    async with pool.acquire() as conn, conn.transaction():
        await users.lock(conn, [user["id"]])
        await _refuse_second(conn, user["id"], "sms")
        factor = await authenticators.insert_sms(
            conn,
            user_id=user["id"],
            name="Backup phone",
            phone=sms.seal_phone(settings.secret_key, phone),
            phone_hint=sms.mask_phone(phone),
        )
        enrolled = await confirm_factor(conn, settings, user, factor)
    await factors.attempt_succeeded(redis, settings, user["id"])
    return enrolled


# --- Recovery codes, removing, renaming -----------------------------------------------------


async def regenerate(pool: asyncpg.Pool, settings: Settings, user: asyncpg.Record) -> list[str]:
    """A new set of recovery codes, voiding the old one, and a security notice (wake the
    dispatcher); `Invalid` without a second factor. The caller checks re-authentication."""
    async with pool.acquire() as conn, conn.transaction():
        await users.lock(conn, [user["id"]])
        if await authenticators.count_second_factors(conn, user["id"]) == 0:
            raise Invalid(
                "no-second-factor",
                "Set up an authenticator app, a security key or a backup phone before recovery"
                " codes.",
            )
        authenticator_id, codes = await _new_recovery_codes(conn, settings, user["id"])
        await _security_notice(
            conn,
            settings,
            email=user["email"],
            authenticator_id=authenticator_id,
            action="added",
            factor="recovery",
            factor_name="Recovery codes",
        )
    return codes


async def remove(
    pool: asyncpg.Pool,
    settings: Settings,
    user: asyncpg.Record,
    authenticator_id: int,
    *,
    keep_session: int | None,
) -> asyncpg.Record:
    """Removes one of the user's factors (with the recovery codes when it was the last second
    factor), ends their sessions but `keep_session`, queues a security notice (wake the
    dispatcher); the factor removed. `NotFound`, or `NotAllowed` (`last_factor`, naming the
    organization and its level) while an organization that has them in its scope needs it.
    The caller checks re-authentication."""
    async with pool.acquire() as conn, conn.transaction():
        # Locked like an enrollment, so two deletions cannot each leave the other as the last.
        await users.lock(conn, [user["id"]])
        factor = await authenticators.get(conn, user["id"], authenticator_id, lock=True)
        if factor is None:
            raise NotFound("authenticator-not-found", factors.NOT_FOUND)
        if compliance.counts(factor["type"]):
            # The last factor that an organization's level accepts stays (any level: the
            # last second factor at all).
            needed = await authenticators.needed_by_requirement(conn, user["id"], factor["id"])
            if needed is not None:
                raise NotAllowed(
                    "last-factor", factors.last_factor(needed["name"], needed["level"])
                )
            others = await authenticators.count_second_factors(
                conn, user["id"], excluding=factor["id"]
            )
            if others == 0:
                await authenticators.delete_recovery(conn, user["id"])
        await authenticators.delete(conn, factor["id"])
        await sessions.end_others(conn, user["id"], keep=keep_session)
        await _security_notice(
            conn,
            settings,
            email=user["email"],
            authenticator_id=factor["id"],
            action="removed",
            factor=factor["type"],
            factor_name=factor["name"],
        )
    return factor


async def rename(
    pool: asyncpg.Pool, user_id: int, authenticator_id: int, name_text: str
) -> asyncpg.Record:
    """Gives one of the user's factors a new name (spaces collapsed); `Invalid` for a blank or
    too long name, `NotFound` for a factor that is not theirs or is the recovery codes."""
    name = " ".join(name_text.split())
    if not name or len(name) > 100:
        raise Invalid("invalid-name", "Enter a name of 1 to 100 characters.", field="name")
    async with pool.acquire() as conn:
        row = await authenticators.rename(conn, user_id, authenticator_id, name)
    if row is None:
        raise NotFound("authenticator-not-found", factors.NOT_FOUND)
    return row
