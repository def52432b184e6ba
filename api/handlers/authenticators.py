"""The signed-in user's second factors: TOTP, backup phone (SMS), security keys and passkeys
(WebAuthn) and recovery codes (`require2fa.factors`, `require2fa.security_keys`, through
`api.factor_actions` where the session is involved)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from api import factor_actions, shapes
from api.auth import Auth, require_sudo, require_user
from api.connection import request_pool
from api.errors import parse_body, path_id
from api.jsonio import json_response
from api.keys import REDIS, SETTINGS
from api.serializers import serialize_authenticator
from api.sessions import SESSION_ID
from api.shapes import (
    JoinStep,
    RecoveryCodes,
    SmsEnrollmentSent,
    TotpSecret,
    WebauthnOptions,
    checked,
)
from require2fa import enrollment, factors, sms
from require2fa.enrollment import Enrolled


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


async def list_authenticators(request: web.Request) -> web.Response:
    """The caller's confirmed factors."""
    auth = await require_user(request)
    rows = await factors.listed(await request_pool(request), auth.user_id)
    return json_response([serialize_authenticator(row) for row in rows])


async def _enrolled(request: web.Request, auth: Auth, enrolled: Enrolled) -> web.Response:
    """The answer to a confirmed enrollment, once its transaction has committed."""
    body: shapes.Enrolled = {**serialize_authenticator(enrolled.factor)}
    if enrolled.recovery_codes is not None:
        body["recoveryCodes"] = enrolled.recovery_codes
    step = await factor_actions.after_enrollment(request, auth)
    if step is not None:
        body["joinStep"] = checked(JoinStep, step)
    return json_response(body, status=201)


async def enroll_totp(request: web.Request) -> web.Response:
    """`{}`: a new secret with its otpauth URL and QR code (nothing stored). `{secret, otp}`:
    confirms it, writing the factor, recovery codes on the first factor and a security notice."""
    auth = await require_user(request)
    body = await parse_body(request, TotpEnrollIn)
    pool = await request_pool(request)
    if body.otp is None:
        return json_response(checked(TotpSecret, await enrollment.new_totp(pool, auth.user)))
    enrolled = await enrollment.confirm_totp(
        pool,
        request.app[REDIS],
        request.app[SETTINGS],
        auth.user,
        secret_text=body.secret or "",
        otp=body.otp,
        name=body.name,
    )
    return await _enrolled(request, auth, enrolled)


async def enroll_sms(request: web.Request) -> web.Response:
    """`{phone}`: texts a code to the number (stored hashed for 5 minutes). `{phone, otp}`:
    confirms it, writing the factor, recovery codes on the first factor and a security notice."""
    auth = await require_user(request)
    body = await parse_body(request, SmsEnrollIn)
    pool, redis, settings = await request_pool(request), request.app[REDIS], request.app[SETTINGS]
    if body.otp is None:
        phone = await enrollment.send_enrollment_code(
            pool, redis, settings, auth.user_id, body.phone
        )
        sent: SmsEnrollmentSent = {
            "phone": phone,
            "sent": True,
            "expiresIn": sms.CODE_TTL_SECONDS,
        }
        return json_response(sent)
    enrolled = await enrollment.confirm_sms(
        pool, redis, settings, auth.user, phone_text=body.phone, otp=body.otp
    )
    return await _enrolled(request, auth, enrolled)


async def regenerate_recovery_codes(request: web.Request) -> web.Response:
    """A new set of recovery codes, voiding the old one (sudo); queues a security notice."""
    auth = await require_sudo(request)
    codes = await enrollment.regenerate(
        await request_pool(request), request.app[SETTINGS], auth.user
    )
    body: RecoveryCodes = {"recoveryCodes": codes}
    return json_response(body)


async def delete_authenticator(request: web.Request) -> web.Response:
    """Removes one of the caller's factors (with the recovery codes when it was the last second
    factor); refused while an organization of theirs requires 2FA (sudo). Ends the user's other
    sessions; queues a security notice."""
    auth = await require_user(request)
    authenticator_id = path_id(request, "id")
    await require_sudo(request)
    await enrollment.remove(
        await request_pool(request),
        request.app[SETTINGS],
        auth.user,
        authenticator_id,
        keep_session=request.get(SESSION_ID),
    )
    return web.Response(status=204)


async def rename_authenticator(request: web.Request) -> web.Response:
    """Renames one of the caller's factors (an app, a phone or a key; not the recovery codes)."""
    auth = await require_user(request)
    authenticator_id = path_id(request, "id")
    body = await parse_body(request, RenameIn)
    row = await enrollment.rename(
        await request_pool(request), auth.user_id, authenticator_id, body.name
    )
    return json_response(serialize_authenticator(row))


async def register_webauthn(request: web.Request) -> web.Response:
    """`{}`: creation options for a new key (a challenge filed for this session; nothing stored).
    `{credential, name}`: verifies the registration response against that challenge and writes
    the key, recovery codes on the first factor and a security notice."""
    auth = await require_user(request)
    body = await parse_body(request, WebauthnRegisterIn)
    if body.credential is None:
        options: WebauthnOptions = {
            "publicKey": await factor_actions.registration_options(request, auth)
        }
        return json_response(options)
    enrolled = await factor_actions.register_key(request, auth, body.credential, body.name)
    return await _enrolled(request, auth, enrolled)
