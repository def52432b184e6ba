"""The signed-in user's second factors: TOTP, backup phone (SMS), security keys and passkeys
(WebAuthn) and recovery codes.

The plain async functions here (checking a code, sending a sign-in SMS, the rate limits) are
what both the API handlers and the pages call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from aiohttp_session import get_session
from pydantic import BaseModel, Field

from api.auth import Auth, require_sudo, require_user
from api.connection import connection, request_pool
from api.errors import api_error, parse_body, path_id, rate_limited
from api.invite_session import step_from_session
from api.jsonio import json_response
from api.keys import REDIS, SETTINGS
from api.sessions import SESSION_ID
from db import authenticators, outbox, sessions, users
from jobs import email as email_jobs
from require2fa import compliance, email_contexts, ratelimit, sms, totp, webauthn
from require2fa.ratelimit import Limit
from require2fa.security import new_token
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

# Second-factor attempts (sign-in step and enrollment confirmations), per user.
SECOND_FACTOR_BURST = Limit("2fa-burst", 5, 20)
SECOND_FACTOR_HOURLY = Limit("2fa-hour", 20, 3600)
# Text messages sent, per user.
SMS_SENDS = Limit("sms-send", 5, 3600)

LAST_FACTOR = "Cannot delete authenticator because organization requires 2FA"
INVALID_CODE = "Invalid verification code."
SMS_FAILED = "The text message could not be sent; try again later."
KEY_NOT_ACCEPTED = "The security key's answer could not be verified; try again."
KEY_TAKEN = "This security key is already registered."
MAX_KEYS = 20
# The session's key holding, per WebAuthn purpose, the random value its challenge is filed under.
WEBAUTHN_SESSION_KEY = "webauthn"


class TotpEnrollIn(BaseModel):
    secret: str | None = Field(default=None, max_length=64)
    otp: str | None = Field(default=None, max_length=16)
    name: str = Field(default="Authenticator app", min_length=1, max_length=100)


class WebauthnRegisterIn(BaseModel):
    credential: dict[str, Any] | None = None  # the registration response, as JSON
    name: str = Field(default="Security key", min_length=1, max_length=100)


class RenameIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class SmsEnrollIn(BaseModel):
    phone: str = Field(min_length=1, max_length=32)
    otp: str | None = Field(default=None, max_length=16)


def serialize_authenticator(row: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(row["id"]),
        "type": row["type"],
        "name": row["name"],
        "createdAt": row["created_at"].isoformat(),
        "lastUsedAt": row["last_used_at"].isoformat() if row["last_used_at"] else None,
    }
    if row["type"] == "sms":
        data["phone"] = sms.mask_phone(row["phone"])
    if row["type"] == "recovery":
        data["unusedCodes"] = row["unused_codes"]
    return data


# --- Rate limits --------------------------------------------------------------------------


async def count_attempt(redis: aioredis.Redis, settings: Settings, user_id: int) -> None:
    """Counts one second-factor attempt of the user; 429 once over either limit."""
    for rule in (SECOND_FACTOR_BURST, SECOND_FACTOR_HOURLY):
        verdict = await ratelimit.hit(redis, settings.redis_namespace, rule, str(user_id))
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after, "Too many codes tried; try again later.")


async def attempt_succeeded(redis: aioredis.Redis, settings: Settings, user_id: int) -> None:
    """A right code clears the counters (only the owner of the factor can produce one)."""
    for rule in (SECOND_FACTOR_BURST, SECOND_FACTOR_HOURLY):
        await ratelimit.reset(redis, settings.redis_namespace, rule, str(user_id))


async def count_sms_send(redis: aioredis.Redis, settings: Settings, user_id: int) -> None:
    verdict = await ratelimit.hit(redis, settings.redis_namespace, SMS_SENDS, str(user_id))
    if not verdict.allowed:
        raise rate_limited(verdict.retry_after, "Too many text messages sent; try again later.")


# --- Codes --------------------------------------------------------------------------------


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


async def send_login_code(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, user_id: int
) -> asyncpg.Record | None:
    """Texts a sign-in code to the user's backup phone; the SMS factor, or None if they have
    none. Rate limited (429); 503 when the gateway fails."""
    async with pool.acquire() as conn:
        factors = await authenticators.of_type(conn, user_id, "sms")
    if not factors:
        return None
    factor = factors[0]
    await count_sms_send(redis, settings, user_id)
    code = sms.new_code()
    await sms.store_code(
        redis, settings, purpose="login", user_id=user_id, binding=str(factor["id"]), code=code
    )
    await _send(settings, factor["phone"], code)
    return factor


async def _send(settings: Settings, phone: str, code: str) -> None:
    body = f"Your require2fa verification code is {code}. It expires in 5 minutes."
    try:
        await sms.send(settings, phone, body)
    except sms.SmsError as err:
        log.warning("sms.failed", error=str(err))
        raise api_error(503, SMS_FAILED) from None


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


# --- Handlers -----------------------------------------------------------------------------


async def list_authenticators(request: web.Request) -> web.Response:
    """The caller's confirmed factors."""
    auth = await require_user(request)
    async with connection(request) as conn:
        rows = await authenticators.for_user(conn, auth.user_id)
    return json_response([serialize_authenticator(row) for row in rows])


@dataclass(frozen=True)
class Enrolled:
    """A factor whose confirmation has committed."""

    factor: asyncpg.Record
    recovery_codes: list[str] | None  # set when this enrollment created the user's first set


async def _enrolled(request: web.Request, auth: Auth, enrolled: Enrolled) -> web.Response:
    """The answer to a confirmed enrollment (TOTP or SMS), once its transaction has committed."""
    body = serialize_authenticator(enrolled.factor)
    if enrolled.recovery_codes is not None:
        body["recoveryCodes"] = enrolled.recovery_codes
    step = await after_enrollment(request, auth)
    if step is not None:
        body["joinStep"] = step
    return json_response(body, status=201)


async def after_enrollment(request: web.Request, auth: Auth) -> dict[str, Any] | None:
    """Once an enrollment has committed: sends its security notice and, for a person who
    arrived through an invite link (remembered in the session), offers that link's explicit
    "Join {org}" step (`step_from_session`'s answer), or None. Joins nothing."""
    await email_jobs.kick()  # the security notice
    return await step_from_session(request, auth.user_id)


async def _confirm_factor(
    conn: asyncpg.Connection, settings: Settings, auth: Auth, factor: asyncpg.Record
) -> Enrolled:
    """The rest of a confirmation's transaction: recovery codes if the user has none yet, and
    the security notice."""
    codes = None
    if await authenticators.recovery(conn, auth.user_id) is None:
        _, codes = await _new_recovery_codes(conn, settings, auth.user_id)
    await _security_notice(
        conn,
        settings,
        email=auth.user["email"],
        authenticator_id=factor["id"],
        action="added",
        factor=factor["type"],
        factor_name=factor["name"],
    )
    row = await authenticators.get(conn, auth.user_id, factor["id"])
    return Enrolled(factor=row, recovery_codes=codes)


async def _refuse_second(conn: asyncpg.Connection, user_id: int, type_: str) -> None:
    if await authenticators.of_type(conn, user_id, type_):
        what = "An authenticator app" if type_ == "totp" else "A backup phone"
        raise api_error(409, f"{what} is already set up; remove it first to replace it.")


async def enroll_totp(request: web.Request) -> web.Response:
    """`{}`: a new secret with its otpauth URL and QR code (nothing stored). `{secret, otp}`:
    confirms it, writing the factor, recovery codes on the first factor and a security notice."""
    auth = await require_user(request)
    body = await parse_body(request, TotpEnrollIn)
    pool = await request_pool(request)
    if body.otp is None:
        async with pool.acquire() as conn:
            await _refuse_second(conn, auth.user_id, "totp")
        fresh = totp.new_secret()
        url = totp.otpauth_url(fresh, auth.user["email"])
        return json_response({"secret": fresh, "otpauthUrl": url, "qrcode": totp.qrcode_svg(url)})

    enrolled = await confirm_totp(request, auth, body.secret or "", body.otp, body.name)
    return await _enrolled(request, auth, enrolled)


async def confirm_totp(
    request: web.Request, auth: Auth, secret_text: str, otp: str, name: str
) -> Enrolled:
    """Confirms an authenticator app from its secret and a code (rate limited): writes the
    factor, recovery codes on the first factor and a security notice. 400/409/429 as JSON
    `HTTPException`s. The caller then calls `after_enrollment`."""
    settings = request.app[SETTINGS]
    pool = await request_pool(request)
    secret = totp.normalize_secret(secret_text)
    if secret is None:
        raise api_error(
            400,
            "Invalid request.",
            errors={"secret": ["Send back the secret from the first step."]},
        )
    redis = request.app[REDIS]
    await count_attempt(redis, settings, auth.user_id)
    step = totp.matching_step(secret, otp)
    if step is None:
        raise api_error(400, INVALID_CODE, errors={"otp": [INVALID_CODE]})
    async with pool.acquire() as conn, conn.transaction():
        # The same lock as enforcement's removal: whichever commits second sees the other.
        await users.lock(conn, [auth.user_id])
        await _refuse_second(conn, auth.user_id, "totp")
        factor = await authenticators.insert_totp(
            conn,
            user_id=auth.user_id,
            name=name,
            secret_encrypted=totp.encrypt_secret(settings.secret_key, secret),
            step=step,
        )
        enrolled = await _confirm_factor(conn, settings, auth, factor)
    await attempt_succeeded(redis, settings, auth.user_id)
    return enrolled


async def enroll_sms(request: web.Request) -> web.Response:
    """`{phone}`: texts a code to the number (stored hashed for 5 minutes). `{phone, otp}`:
    confirms it, writing the factor, recovery codes on the first factor and a security notice."""
    auth = await require_user(request)
    body = await parse_body(request, SmsEnrollIn)
    if body.otp is None:
        phone = await send_enrollment_code(request, auth, body.phone)
        return json_response({"phone": phone, "sent": True, "expiresIn": sms.CODE_TTL_SECONDS})
    enrolled = await confirm_sms(request, auth, body.phone, body.otp)
    return await _enrolled(request, auth, enrolled)


def _phone(text: str) -> str:
    phone = sms.normalize_phone(text)
    if phone is None:
        raise api_error(
            400,
            "Invalid request.",
            errors={"phone": ["Enter the number in international format, such as +14155550123."]},
        )
    return phone


async def send_enrollment_code(request: web.Request, auth: Auth, phone_text: str) -> str:
    """Texts a code to the number being added (rate limited); the number in E.164. 400 for a
    bad number, 409 when a backup phone exists, 429, 503 as JSON `HTTPException`s."""
    settings, redis = request.app[SETTINGS], request.app[REDIS]
    phone = _phone(phone_text)
    async with connection(request) as conn:
        await _refuse_second(conn, auth.user_id, "sms")
    await count_sms_send(redis, settings, auth.user_id)
    code = sms.new_code()
    await sms.store_code(
        redis, settings, purpose="enroll", user_id=auth.user_id, binding=phone, code=code
    )
    await _send(settings, phone, code)
    return phone


async def confirm_sms(request: web.Request, auth: Auth, phone_text: str, otp: str) -> Enrolled:
    """Confirms a backup phone with the code texted to it (rate limited): writes the factor,
    recovery codes on the first factor and a security notice. The caller then calls
    `after_enrollment`."""
    settings, redis = request.app[SETTINGS], request.app[REDIS]
    phone = _phone(phone_text)
    await count_attempt(redis, settings, auth.user_id)
    taken = await sms.take_code(
        redis, settings, purpose="enroll", user_id=auth.user_id, binding=phone, code=otp
    )
    if not taken:
        raise api_error(400, INVALID_CODE, errors={"otp": [INVALID_CODE]})
    async with connection(request) as conn, conn.transaction():
        await users.lock(conn, [auth.user_id])
        await _refuse_second(conn, auth.user_id, "sms")
        factor = await authenticators.insert_sms(
            conn, user_id=auth.user_id, name="Backup phone", phone=phone
        )
        enrolled = await _confirm_factor(conn, settings, auth, factor)
    await attempt_succeeded(redis, settings, auth.user_id)
    return enrolled


async def regenerate_recovery_codes(request: web.Request) -> web.Response:
    """A new set of recovery codes, voiding the old one (sudo); queues a security notice."""
    auth = await require_user(request)
    return json_response({"recoveryCodes": await regenerate(request, auth)})


async def regenerate(request: web.Request, auth: Auth) -> list[str]:
    """What `regenerate_recovery_codes` does (API and page), after a recent re-authentication
    (`require_sudo`); the new codes (400 without a second factor)."""
    await require_sudo(request)
    settings = request.app[SETTINGS]
    async with connection(request) as conn, conn.transaction():
        await users.lock(conn, [auth.user_id])
        if await authenticators.count_second_factors(conn, auth.user_id) == 0:
            raise api_error(
                400,
                "Set up an authenticator app, a security key or a backup phone before recovery"
                " codes.",
            )
        authenticator_id, codes = await _new_recovery_codes(conn, settings, auth.user_id)
        await _security_notice(
            conn,
            settings,
            email=auth.user["email"],
            authenticator_id=authenticator_id,
            action="added",
            factor="recovery",
            factor_name="Recovery codes",
        )
    await email_jobs.kick()
    return codes


async def delete_authenticator(request: web.Request) -> web.Response:
    """Removes one of the caller's factors (with the recovery codes when it was the last second
    factor); refused while an organization of theirs requires 2FA (sudo). Ends the user's other
    sessions; queues a security notice."""
    auth = await require_user(request)
    await remove(request, auth, path_id(request, "id"))
    return web.Response(status=204)


async def remove(request: web.Request, auth: Auth, authenticator_id: int) -> asyncpg.Record:
    """What `delete_authenticator` does (API and page), after a recent re-authentication
    (`require_sudo`); the factor removed. 404, or 403 `LAST_FACTOR`."""
    await require_sudo(request)
    settings = request.app[SETTINGS]
    async with connection(request) as conn, conn.transaction():
        # Locked like an enrollment, so two deletions cannot each leave the other as the last.
        await users.lock(conn, [auth.user_id])
        factor = await authenticators.get(conn, auth.user_id, authenticator_id, lock=True)
        if factor is None:
            raise api_error(404, "The requested authenticator does not exist.")
        if compliance.counts(factor["type"]):
            # The last factor that an organization's level accepts stays (any level: the
            # last second factor at all).
            if await authenticators.needed_by_requirement(conn, auth.user_id, factor["id"]):
                raise api_error(403, LAST_FACTOR)
            others = await authenticators.count_second_factors(
                conn, auth.user_id, excluding=factor["id"]
            )
            if others == 0:
                await authenticators.delete_recovery(conn, auth.user_id)
        await authenticators.delete(conn, factor["id"])
        await sessions.end_others(conn, auth.user_id, keep=request.get(SESSION_ID))
        await _security_notice(
            conn,
            settings,
            email=auth.user["email"],
            authenticator_id=factor["id"],
            action="removed",
            factor=factor["type"],
            factor_name=factor["name"],
        )
    await email_jobs.kick()
    return factor


async def rename_authenticator(request: web.Request) -> web.Response:
    """Renames one of the caller's factors (an app, a phone or a key; not the recovery codes)."""
    auth = await require_user(request)
    authenticator_id = path_id(request, "id")
    body = await parse_body(request, RenameIn)
    row = await rename(request, auth, authenticator_id, body.name)
    return json_response(serialize_authenticator(row))


async def rename(
    request: web.Request, auth: Auth, authenticator_id: int, name_text: str
) -> asyncpg.Record:
    """Gives one of the user's factors a new name (spaces collapsed); 400 for a blank or too
    long name, 404 for a factor that is not theirs or is the recovery codes."""
    name = " ".join(name_text.split())
    if not name or len(name) > 100:
        raise api_error(
            400, "Invalid request.", errors={"name": ["Enter a name of 1 to 100 characters."]}
        )
    async with connection(request) as conn:
        row = await authenticators.rename(conn, auth.user_id, authenticator_id, name)
    if row is None:
        raise api_error(404, "The requested authenticator does not exist.")
    return row


# --- Security keys and passkeys (WebAuthn) ---------------------------------------------------


async def _binding(request: web.Request, auth: Auth, purpose: str, *, fresh: bool) -> str:
    """What a WebAuthn challenge is filed under: a random value kept in the browser session
    (a new one for each ceremony started, so an older cookie cannot finish it), or the API
    token asking."""
    if auth.token_id is not None:
        return f"token-{auth.token_id}"
    session = await get_session(request)
    held = session.get(WEBAUTHN_SESSION_KEY)
    held = dict(held) if isinstance(held, dict) else {}
    if fresh:
        replaced = held.get(purpose)
        if isinstance(replaced, str):  # a ceremony this session started and left unfinished
            await webauthn.drop_challenge(
                request.app[REDIS], request.app[SETTINGS], purpose=purpose, binding=replaced
            )
        held[purpose] = new_token()
        session[WEBAUTHN_SESSION_KEY] = held
    value = held.get(purpose)
    if not isinstance(value, str):
        raise api_error(400, KEY_NOT_ACCEPTED)
    if not fresh:
        del held[purpose]
        session[WEBAUTHN_SESSION_KEY] = held
    return value


def _credentials(rows: list[asyncpg.Record]) -> list[tuple[bytes, list[str] | None]]:
    return [(bytes(row["credential_id"]), row["transports"]) for row in rows]


async def webauthn_options(request: web.Request, auth: Auth, purpose: str) -> dict[str, Any]:
    """Starts a sign-in (or re-authentication) with one of the user's keys: a challenge filed
    for this session, and the request options naming their keys. 400 when they have none."""
    settings = request.app[SETTINGS]
    async with connection(request) as conn:
        keys = await authenticators.of_type(conn, auth.user_id, "webauthn")
    if not keys:
        raise api_error(400, "No security key is set up for this account.")
    challenge = webauthn.new_challenge()
    await webauthn.store_challenge(
        request.app[REDIS],
        settings,
        purpose=purpose,
        binding=await _binding(request, auth, purpose, fresh=True),
        user_id=auth.user_id,
        challenge=challenge,
    )
    return webauthn.authentication_options(
        settings, credentials=_credentials(keys), challenge=challenge
    )


async def verify_webauthn(
    request: web.Request, auth: Auth, credential: dict[str, Any], purpose: str
) -> asyncpg.Record | None:
    """The user's key that signed `credential` (an authentication response) over the challenge
    this session was given for `purpose`, its counter now recorded; None when it does not verify
    (no such challenge, used already, another origin or RP id, a bad signature, a key that is not
    theirs, a counter that did not go forward). The challenge is spent either way."""
    settings = request.app[SETTINGS]
    try:
        challenge = await webauthn.take_challenge(
            request.app[REDIS],
            settings,
            purpose=purpose,
            binding=await _binding(request, auth, purpose, fresh=False),
            user_id=auth.user_id,
        )
        credential_id = webauthn.credential_id_of(credential)
    except (webauthn.CeremonyError, web.HTTPException) as err:
        log.info("webauthn.refused", user_id=auth.user_id, reason=getattr(err, "reason", "none"))
        return None
    async with connection(request) as conn:
        key = await authenticators.webauthn_by_credential(conn, auth.user_id, credential_id)
        if key is None:
            log.info("webauthn.refused", user_id=auth.user_id, reason="unknown credential")
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
            log.info("webauthn.refused", user_id=auth.user_id, reason=err.reason)
            return None
        if not await authenticators.claim_webauthn_counter(
            conn, key["id"], key["sign_count"], asserted.new_sign_count
        ):
            log.info("webauthn.refused", user_id=auth.user_id, reason="counter did not advance")
            return None
        return await authenticators.get(conn, auth.user_id, key["id"])


async def register_webauthn(request: web.Request) -> web.Response:
    """`{}`: creation options for a new key (a challenge filed for this session; nothing stored).
    `{credential, name}`: verifies the registration response against that challenge and writes
    the key, recovery codes on the first factor and a security notice."""
    auth = await require_user(request)
    body = await parse_body(request, WebauthnRegisterIn)
    settings = request.app[SETTINGS]
    redis = request.app[REDIS]
    pool = await request_pool(request)
    if body.credential is None:
        async with pool.acquire() as conn:
            keys = await authenticators.of_type(conn, auth.user_id, "webauthn")
        if len(keys) >= MAX_KEYS:
            raise api_error(409, f"You have {MAX_KEYS} security keys; remove one to add another.")
        challenge = webauthn.new_challenge()
        await webauthn.store_challenge(
            redis,
            settings,
            purpose=webauthn.REGISTER,
            binding=await _binding(request, auth, webauthn.REGISTER, fresh=True),
            user_id=auth.user_id,
            challenge=challenge,
        )
        options = webauthn.registration_options(
            settings,
            user_id=auth.user_id,
            email=auth.user["email"],
            display_name=auth.user["name"],
            existing=_credentials(keys),
            challenge=challenge,
        )
        return json_response({"publicKey": options})
    enrolled = await confirm_webauthn(request, auth, body.credential, body.name)
    return await _enrolled(request, auth, enrolled)


async def confirm_webauthn(
    request: web.Request, auth: Auth, credential: dict[str, Any], name: str
) -> Enrolled:
    """Verifies a registration response against this session's challenge (spent either way)
    and writes the key, the first recovery codes and a security notice. 400/409 as JSON
    `HTTPException`s. The caller then calls `after_enrollment`."""
    settings = request.app[SETTINGS]
    try:
        challenge = await webauthn.take_challenge(
            request.app[REDIS],
            settings,
            purpose=webauthn.REGISTER,
            binding=await _binding(request, auth, webauthn.REGISTER, fresh=False),
            user_id=auth.user_id,
        )
        registered = webauthn.verify_registration(settings, credential, challenge)
    except webauthn.CeremonyError as err:
        log.info("webauthn.registration_refused", user_id=auth.user_id, reason=err.reason)
        raise api_error(400, KEY_NOT_ACCEPTED) from None
    async with connection(request) as conn, conn.transaction():
        await users.lock(conn, [auth.user_id])
        if len(await authenticators.of_type(conn, auth.user_id, "webauthn")) >= MAX_KEYS:
            raise api_error(409, f"You have {MAX_KEYS} security keys; remove one to add another.")
        factor = await authenticators.insert_webauthn(
            conn,
            user_id=auth.user_id,
            name=" ".join(name.split()) or "Security key",
            credential_id=registered.credential_id,
            public_key=registered.public_key,
            sign_count=registered.sign_count,
            transports=registered.transports,
        )
        if factor is None:
            raise api_error(409, KEY_TAKEN)
        return await _confirm_factor(conn, settings, auth, factor)
