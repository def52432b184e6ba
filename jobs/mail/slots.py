"""Dispatcher slots: at most `DISPATCHERS` dispatches send at once, across every worker."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from require2fa.settings import Settings

DISPATCHERS = 4  # dispatches that may send at the same time, across every worker
# A dead dispatcher's slot frees itself after this; a live one renews it every few seconds
# (`jobs.email.HEARTBEAT_SECONDS`), so after a kill -9 another dispatcher may send within it.
SLOT_TTL_MS = 15_000

# Slot keys hold the owner's token; only the owner renews or frees its slot.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Slots:
    """At most `DISPATCHERS` dispatches send at once; each holds a slot key in Redis."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.prefix = f"{settings.redis_namespace}:email:dispatcher"
        self.token = uuid.uuid4().hex
        self.key: str | None = None

    async def acquire(self) -> bool:
        for slot in range(DISPATCHERS):
            key = f"{self.prefix}:{slot}"
            if await self.redis.set(key, self.token, nx=True, px=SLOT_TTL_MS):
                self.key = key
                return True
        return False

    async def renew(self) -> bool:
        """Keeps the slot for another SLOT_TTL_MS; False when it was lost (it lapsed, or Redis
        restarted empty): another dispatch may have it now."""
        if self.key is None:
            return False
        renewed = await self.redis.eval(_RENEW, 1, self.key, self.token, SLOT_TTL_MS)  # type: ignore[misc]
        return bool(renewed)

    async def release(self) -> None:
        if self.key is not None:
            await self.redis.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]
            self.key = None
