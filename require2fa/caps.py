"""Caps on what one account, organization, address or phone number may cause (issue 25, point 11):
invitations (each a "Join" email to a stranger), sign-ups, and text messages. Every number and
window is here; each refusal is `TooMany` (429 with `Retry-After` and a sentence).

Counted like every other limit (`require2fa.ratelimit`: one atomic INCR before the work it
guards), so parallel requests cannot pass a cap. A phone number is counted under a keyed hash
(`phone_key`), never in the clear.
"""

from __future__ import annotations

import hashlib
import hmac

import redis.asyncio as aioredis

from require2fa import ratelimit
from require2fa.errors import TooMany
from require2fa.ratelimit import Limit
from require2fa.security import derive_key
from require2fa.settings import Settings

DAY = 24 * 3600
HOUR = 3600

INVITES_PER_ACCOUNT = Limit("invite-account", 50, DAY)
INVITES_PER_ORGANIZATION = Limit("invite-org", 200, DAY)
SIGN_UPS_PER_ADDRESS = Limit("sign-up-address", 10, HOUR)
SMS_PER_ACCOUNT = Limit("sms-send", 5, HOUR)
SMS_PER_NUMBER = Limit("sms-number", 5, HOUR)  # as many as one account may ask for itself


async def _hit(
    redis: aioredis.Redis, settings: Settings, rule: Limit, key: str, code: str, detail: str
) -> None:
    verdict = await ratelimit.hit(redis, settings.redis_namespace, rule, key)
    if not verdict.allowed:
        raise TooMany(code, detail, retry_after=verdict.retry_after)


async def count_invitation(
    redis: aioredis.Redis, settings: Settings, *, organization_id: int, user_id: int
) -> None:
    """One invitation sent by `user_id` for the organization; `TooMany` over either cap."""
    await _hit(
        redis,
        settings,
        INVITES_PER_ACCOUNT,
        str(user_id),
        "invites-limited",
        f"You have sent {INVITES_PER_ACCOUNT.limit} invitations today",
    )
    await _hit(
        redis,
        settings,
        INVITES_PER_ORGANIZATION,
        str(organization_id),
        "invites-limited",
        f"This organization has sent {INVITES_PER_ORGANIZATION.limit} invitations today",
    )


async def count_sign_up(redis: aioredis.Redis, settings: Settings, address: str | None) -> None:
    """One account created from `address`; `TooMany` over the cap."""
    await _hit(
        redis,
        settings,
        SIGN_UPS_PER_ADDRESS,
        address or "-",
        "sign-ups-limited",
        "Too many accounts were created from your network address",
    )


def phone_key(secret_key: str, phone: str) -> str:
    """The keyed hash a phone number (E.164) is counted and looked up under: HMAC-SHA256 with a
    key derived from SECRET_KEY, so a copy of Redis or the database does not give the numbers."""
    key = derive_key(secret_key, "phone-lookup")
    return hmac.new(key, phone.encode(), hashlib.sha256).hexdigest()


async def count_sms(redis: aioredis.Redis, settings: Settings, *, user_id: int, phone: str) -> None:
    """One text message for `user_id` to `phone`; `TooMany` over either cap (several accounts
    cannot flood one number, one account cannot flood many)."""
    await _hit(
        redis,
        settings,
        SMS_PER_ACCOUNT,
        str(user_id),
        "sms-limited",
        "Too many text messages sent",
    )
    await _hit(
        redis,
        settings,
        SMS_PER_NUMBER,
        phone_key(settings.secret_key, phone),
        "sms-limited",
        "Too many text messages were sent to this number",
    )
