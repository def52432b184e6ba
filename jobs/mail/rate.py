"""`EMAIL_RATE`: token buckets in Redis shared by every worker.

Every send takes a token of the `EMAIL_RATE` bucket; a bulk send also takes one of a second
bucket filling at `BULK_SHARE` of that rate (`require2fa.email_classes`), so that bulk never
takes the whole rate and a transactional email finds a token within a fraction of a second.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from require2fa.email_classes import BULK_SHARE
from require2fa.settings import Settings

# Token buckets: KEYS[i] fills at ARGV[2i-1] tokens a second holding at most ARGV[2i]; takes up
# to the last ARGV tokens from each bucket alike (as many as the emptiest holds); returns
# {taken, milliseconds until each bucket holds a token again when fewer than wanted were taken}.
_TAKE = """
local wanted = tonumber(ARGV[#ARGV])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = {}
local taken = wanted
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local held = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  held = math.min(burst, held + math.max(0, now - at) * rate / 1000)
  tokens[i] = held
  taken = math.min(taken, math.floor(held))
end
local wait = 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local held = tokens[i] - taken
  redis.call('HSET', key, 'tokens', tostring(held), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  if taken < wanted and held < 1 then wait = math.max(wait, math.ceil((1 - held) * 1000 / rate)) end
end
return {taken, wait}
"""


class SendRate:
    """`EMAIL_RATE` sends a second, shared by every worker through buckets in Redis; bulk
    sends at most `BULK_SHARE` of it."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.key = f"{settings.redis_namespace}:email:rate"
        self.bulk_key = f"{settings.redis_namespace}:email:rate:bulk"
        self.rate = settings.email_rate
        self.burst = max(1.0, settings.email_rate)  # a second's worth
        self.bulk_rate = settings.email_rate * BULK_SHARE
        self.bulk_burst = max(1.0, self.bulk_rate)
        # Taken from the buckets, not used yet: tokens taken for bulk serve either class,
        # those taken for a transactional email only that class.
        self.tokens = 0
        self.bulk_tokens = 0

    async def take(self, upcoming: int, *, bulk: bool = False) -> None:
        """Waits for one send; takes tokens for up to `upcoming` sends of the same class in one
        round trip."""
        while self.bulk_tokens == 0 and (bulk or self.tokens == 0):
            keys: list[str] = [self.key]
            args: list[float] = [self.rate, self.burst]
            if bulk:
                keys.append(self.bulk_key)
                args += [self.bulk_rate, self.bulk_burst]
            taken, wait_ms = await self.redis.eval(  # type: ignore[misc]
                _TAKE, len(keys), *keys, *args, max(1, upcoming)
            )
            if bulk:
                self.bulk_tokens += int(taken)
            else:
                self.tokens += int(taken)
            if not taken:
                await asyncio.sleep(int(wait_ms) / 1000)
        if not bulk and self.tokens:
            self.tokens -= 1
        else:
            self.bulk_tokens -= 1
