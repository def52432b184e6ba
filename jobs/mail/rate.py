"""`EMAIL_RATE`: a token bucket in Redis shared by every worker."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from require2fa.settings import Settings

# A token bucket of `rate` tokens a second holding at most `burst`. Takes up to ARGV[3] tokens;
# returns {taken, milliseconds until the next token when fewer than wanted were taken}.
_TAKE = """
local rate, burst, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local taken = math.min(wanted, math.floor(tokens))
tokens = tokens - taken
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
local wait = 0
if taken < wanted then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {taken, wait}
"""


class SendRate:
    """`EMAIL_RATE` sends a second, shared by every worker through one bucket in Redis."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.key = f"{settings.redis_namespace}:email:rate"
        self.rate = settings.email_rate
        self.burst = max(1.0, settings.email_rate)  # a second's worth
        self.tokens = 0  # taken from the bucket, not used yet

    async def take(self, upcoming: int) -> None:
        """Waits for one send; takes tokens for up to `upcoming` sends in one round trip."""
        while self.tokens == 0:
            taken, wait_ms = await self.redis.eval(  # type: ignore[misc]
                _TAKE, 1, self.key, self.rate, self.burst, max(1, upcoming)
            )
            self.tokens += int(taken)
            if self.tokens == 0:
                await asyncio.sleep(int(wait_ms) / 1000)
        self.tokens -= 1
