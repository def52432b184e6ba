"""What the JSON handlers and the pages both do with a person's second factors and password:
take the pool, Redis, the settings and the WebAuthn binding from the request, call the one
domain function (`require2fa.factors`, `security_keys`, `accounts`), wake the workers after it.
Each adapter then renders its answer."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_session import get_session

from api.auth import Auth
from api.connection import request_pool
from api.invite_session import step_from_session
from api.keys import REDIS, SETTINGS
from require2fa import accounts, enrollment, factors, reauth, security_keys, webauthn
from require2fa.errors import NotSignedIn
from require2fa.security import new_token

# The session's key holding, per WebAuthn purpose, the random value its challenge is filed under.
WEBAUTHN_SESSION_KEY = "webauthn"


# --- Bindings of WebAuthn challenges ----------------------------------------------------------


def _held(session: Any) -> dict[str, Any]:
    held = session.get(WEBAUTHN_SESSION_KEY)
    return dict(held) if isinstance(held, dict) else {}


def new_binding(request: web.Request, auth: Auth, purpose: str) -> security_keys.NewBinding:
    """Files a ceremony's challenge under a new random value kept in the browser session (an
    unfinished ceremony of the same purpose is dropped), or under the API token asking."""

    async def make() -> str:
        if auth.token_id is not None:
            return f"token-{auth.token_id}"
        session = await get_session(request)
        held = _held(session)
        replaced = held.get(purpose)
        if isinstance(replaced, str):  # a ceremony this session started and left unfinished
            await webauthn.drop_challenge(
                request.app[REDIS], request.app[SETTINGS], purpose=purpose, binding=replaced
            )
        held[purpose] = value = new_token()
        session[WEBAUTHN_SESSION_KEY] = held
        return value

    return make


def held_binding(request: web.Request, auth: Auth, purpose: str) -> security_keys.HeldBinding:
    """The value the session's challenge for `purpose` is filed under, taken out of the session
    (one answer per challenge), or None."""

    async def take() -> str | None:
        if auth.token_id is not None:
            return f"token-{auth.token_id}"
        session = await get_session(request)
        held = _held(session)
        value = held.get(purpose)
        if not isinstance(value, str):
            return None
        del held[purpose]
        session[WEBAUTHN_SESSION_KEY] = held
        return value

    return take


# --- Security keys ------------------------------------------------------------------------


async def key_options(request: web.Request, auth: Auth, purpose: str) -> dict[str, Any]:
    """`security_keys.authentication_options` for this session (sign-in or sudo)."""
    return await security_keys.authentication_options(
        await request_pool(request),
        request.app[REDIS],
        request.app[SETTINGS],
        auth.user_id,
        new_binding(request, auth, purpose),
        purpose=purpose,
    )


async def registration_options(request: web.Request, auth: Auth) -> dict[str, Any]:
    """`security_keys.registration_options` for this session."""
    return await security_keys.registration_options(
        await request_pool(request),
        request.app[REDIS],
        request.app[SETTINGS],
        auth.user,
        new_binding(request, auth, webauthn.REGISTER),
    )


async def register_key(
    request: web.Request, auth: Auth, credential: dict[str, Any], name: str
) -> enrollment.Enrolled:
    """`security_keys.register` against this session's challenge. The caller then calls
    `after_enrollment`."""
    return await security_keys.register(
        await request_pool(request),
        request.app[REDIS],
        request.app[SETTINGS],
        auth.user,
        held_binding(request, auth, webauthn.REGISTER),
        credential=credential,
        name=name,
    )


# --- Codes and keys checked -------------------------------------------------------------------


async def second_factor(
    request: web.Request,
    auth: Auth,
    *,
    otp: str | None = None,
    credential: dict[str, Any] | None = None,
    purpose: str = webauthn.SIGN_IN,
) -> asyncpg.Record | None:
    """Checks a code (`otp`) or a security key's answer (`credential`) to this session's
    challenge for `purpose`, counted against the second-factor limits (`TooMany` once over; a
    good one clears them). The factor, or None when it is no good."""
    pool, redis, settings = await request_pool(request), request.app[REDIS], request.app[SETTINGS]
    await factors.count_attempt(redis, settings, auth.user_id)
    if otp is not None:
        found = await factors.verify_second_factor(pool, redis, settings, auth.user_id, otp)
    elif credential is not None:
        found = await security_keys.verify(
            pool,
            redis,
            settings,
            auth.user_id,
            held_binding(request, auth, purpose),
            credential=credential,
            purpose=purpose,
        )
    else:
        found = None
    if found is not None:
        await factors.attempt_succeeded(redis, settings, auth.user_id)
    return found


async def check_password(request: web.Request, email: str, password: str) -> asyncpg.Record:
    """`accounts.check_password`, counted against the client's address (as `TRUSTED_PROXIES`
    decides, `api.forwarded`) and the account. Signs nobody in."""
    return await accounts.check_password(
        await request_pool(request),
        request.app[REDIS],
        request.app[SETTINGS],
        email=email,
        password=password,
        address=request.remote,
    )


async def confirm_identity(
    request: web.Request, user: Any, *, password: str | None = None, otp: str | None = None
) -> None:
    """`accounts.reauthenticate` for `user` (the API's `auth/sudo/` and the pages' inline
    step); the caller records it."""
    await accounts.reauthenticate(
        await request_pool(request),
        request.app[REDIS],
        request.app[SETTINGS],
        user,
        password=password,
        otp=otp,
        address=request.remote,
    )


async def confirm_with_key(request: web.Request, auth: Auth, credential: dict[str, Any]) -> None:
    """Checks a security key's answer to this session's sudo challenge; `NotSignedIn`
    (`sudo-required`) when it does not verify, `TooMany` over the second-factor limit."""
    if await second_factor(request, auth, credential=credential, purpose=webauthn.SUDO) is None:
        raise NotSignedIn(reauth.REQUIRED_CODE, security_keys.KEY_NOT_ACCEPTED)


# --- After an enrollment ------------------------------------------------------------------


async def after_enrollment(request: web.Request, auth: Auth) -> dict[str, Any] | None:
    """Once an enrollment has committed (its security notice is announced at commit): for a
    person who arrived through an invite link (remembered in the session), offers that link's
    explicit "Join {org}" step (`step_from_session`'s answer), or None. Joins nothing."""
    return await step_from_session(request, auth.user_id)
