"""Security keys and passkeys (WebAuthn) through py_webauthn: the ceremonies' options, their
verification, and the challenges they sign.

The relying party is this site: its id is BASE_URL's host name and the only origin accepted is
BASE_URL's scheme, host and port. Attestation is `none` (we do not restrict which authenticators
people use), user verification is preferred.

A challenge is random, lives five minutes in Redis and is taken with GETDEL, so it is used at
most once; it is bound to the browser session (or API token) that asked for it and to the user:
a response to a challenge from anywhere else finds nothing to check against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import structlog
import webauthn
from webauthn.helpers import options_to_json_dict, parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from require2fa.security import derive_key
from require2fa.settings import Settings

log = structlog.get_logger(__name__)

RP_NAME = "require2fa"
CHALLENGE_TTL_SECONDS = 5 * 60
# What the browser is told (a hint): a little less than the challenge lives.
TIMEOUT_MS = 4 * 60 * 1000
REGISTER = "register"
SIGN_IN = "login"
SUDO = "sudo"  # re-authentication of a signed-in session (`POST auth/sudo/`)
PURPOSES = (REGISTER, SIGN_IN, SUDO)


class CeremonyError(Exception):
    """The response does not verify (or there is no challenge it answers); the sentence is for
    the person, the reason for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str

    @classmethod
    def of(cls, settings: Settings) -> RelyingParty:
        parts = urlsplit(settings.base_url)
        return cls(id=parts.hostname or "localhost", origin=f"{parts.scheme}://{parts.netloc}")


@dataclass(frozen=True)
class Registered:
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: list[str]


@dataclass(frozen=True)
class Asserted:
    new_sign_count: int
    user_verified: bool


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def user_handle(settings: Settings, user_id: int) -> bytes:
    """The user's opaque WebAuthn id: stable, not their email or database id."""
    key = derive_key(settings.secret_key, "webauthn-user-handle")
    return hmac.new(key, str(user_id).encode(), hashlib.sha256).digest()


def _descriptors(credentials: list[tuple[bytes, list[str] | None]]) -> list[Any]:
    known = {t.value for t in AuthenticatorTransport}
    return [
        PublicKeyCredentialDescriptor(
            id=bytes(credential_id),
            transports=[AuthenticatorTransport(t) for t in (transports or []) if t in known]
            or None,
        )
        for credential_id, transports in credentials
    ]


def registration_options(
    settings: Settings,
    *,
    user_id: int,
    email: str,
    display_name: str,
    existing: list[tuple[bytes, list[str] | None]],
    challenge: bytes,
) -> dict[str, Any]:
    """`navigator.credentials.create()`'s `publicKey`, as JSON; the user's keys are excluded so
    the same key is not registered twice."""
    rp = RelyingParty.of(settings)
    options = webauthn.generate_registration_options(
        rp_id=rp.id,
        rp_name=RP_NAME,
        user_id=user_handle(settings, user_id),
        user_name=email,
        user_display_name=display_name or email,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=_descriptors(existing),
    )
    return options_to_json_dict(options)


def authentication_options(
    settings: Settings, *, credentials: list[tuple[bytes, list[str] | None]], challenge: bytes
) -> dict[str, Any]:
    """`navigator.credentials.get()`'s `publicKey`, as JSON, allowing the user's keys."""
    options = webauthn.generate_authentication_options(
        rp_id=RelyingParty.of(settings).id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(credentials),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options_to_json_dict(options)


def verify_registration(
    settings: Settings, credential: dict[str, Any], challenge: bytes
) -> Registered:
    rp = RelyingParty.of(settings)
    try:
        verified = webauthn.verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except WebAuthnException as err:
        raise CeremonyError(str(err)) from None
    except (ValueError, TypeError, KeyError, IndexError) as err:
        # The library parses CBOR and base64 from the request: any malformed input is refused.
        raise CeremonyError(f"malformed response: {type(err).__name__}") from None
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    if not isinstance(transports, list):
        transports = []
    known = {t.value for t in AuthenticatorTransport}
    return Registered(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=[t for t in transports if t in known][:8]
        if isinstance(transports, list)
        else [],
    )


def credential_id_of(credential: dict[str, Any]) -> bytes:
    """The raw id an authentication response names (not yet verified)."""
    try:
        return bytes(parse_authentication_credential_json(credential).raw_id)
    except (WebAuthnException, ValueError, TypeError) as err:
        raise CeremonyError(f"malformed response: {err}") from None


def verify_authentication(
    settings: Settings,
    credential: dict[str, Any],
    challenge: bytes,
    *,
    public_key: bytes,
    sign_count: int,
) -> Asserted:
    """Checks the assertion's challenge, origin, RP id hash, user presence, signature and that
    its counter went forward (when the authenticator keeps one)."""
    rp = RelyingParty.of(settings)
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
        )
    except WebAuthnException as err:
        raise CeremonyError(str(err)) from None
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise CeremonyError(f"malformed response: {type(err).__name__}") from None
    return Asserted(new_sign_count=verified.new_sign_count, user_verified=verified.user_verified)


# --- Challenges ----------------------------------------------------------------------------


def new_challenge() -> bytes:
    return secrets.token_bytes(32)


def _key(settings: Settings, purpose: str, binding: str) -> str:
    return f"{settings.redis_namespace}:webauthn:{purpose}:{binding}"


async def store_challenge(
    redis: aioredis.Redis,
    settings: Settings,
    *,
    purpose: str,
    binding: str,
    user_id: int,
    challenge: bytes,
) -> None:
    """Remember the challenge for five minutes under `binding` (the session's or token's own
    random value); a newer one replaces it."""
    assert purpose in PURPOSES
    value = json.dumps({"u": user_id, "c": b64url(challenge)})
    await redis.set(_key(settings, purpose, binding), value, ex=CHALLENGE_TTL_SECONDS)


async def take_challenge(
    redis: aioredis.Redis, settings: Settings, *, purpose: str, binding: str, user_id: int
) -> bytes:
    """The challenge stored under `binding` for this user, now gone (GETDEL: one taker wins).
    CeremonyError when there is none (never asked, expired, already used, another user's)."""
    raw = await redis.getdel(_key(settings, purpose, binding))
    if raw is None:
        raise CeremonyError("no challenge pending (expired, used, or never asked for)")
    stored = json.loads(raw)
    if stored.get("u") != user_id:
        raise CeremonyError("challenge belongs to another user")
    text = stored["c"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def drop_challenge(
    redis: aioredis.Redis, settings: Settings, *, purpose: str, binding: str
) -> None:
    await redis.delete(_key(settings, purpose, binding))
