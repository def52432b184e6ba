"""Rate limits kept in Redis, so that every process shares them.

A fixed window per key: the first hit starts the window, `limit` hits fit in it. Callers name
their keys (`"2fa:user:42"`), the namespace keeps test runs and deployments apart.

Every attempt is counted before the work it guards, by one INCR whose result decides (with the
window's expiry set in the same script), never read first and counted after: N requests in
parallel get N distinct counts, so exactly `limit` of them go through.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

# INCR and set the expiry on the first hit, atomically; returns (count, ms left in the window).
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the window resets (0 when allowed)


async def hit(redis: aioredis.Redis, namespace: str, rule: Limit, key: str) -> Verdict:
    """Count one attempt under `rule` for `key`; refused once the window holds `limit`."""
    count, ttl_ms = await redis.eval(  # type: ignore[misc]
        _HIT, 1, f"{namespace}:rl:{rule.name}:{key}", rule.window_seconds * 1000
    )
    if int(count) <= rule.limit:
        return Verdict(True, 0)
    return Verdict(False, max(1, -(-int(ttl_ms) // 1000)))


async def reset(redis: aioredis.Redis, namespace: str, rule: Limit, key: str) -> None:
    """Forgets `key`'s attempts under `rule` (a success by whoever may clear them)."""
    await redis.delete(f"{namespace}:rl:{rule.name}:{key}")


async def count(redis: aioredis.Redis, namespace: str, rule: Limit, key: str) -> int:
    """How many attempts `key` has in `rule`'s current window (nothing counted)."""
    value = await redis.get(f"{namespace}:rl:{rule.name}:{key}")
    return int(value) if value is not None else 0


async def take_turn(
    redis: aioredis.Redis, namespace: str, name: str, key: str, seconds: int
) -> int:
    """One attempt every `seconds` for `key`: 0 when this one may go ahead (the next then waits
    `seconds`), else the seconds left until it may. One atomic SET NX, so parallel attempts get
    one turn between them."""
    full = f"{namespace}:turn:{name}:{key}"
    if await redis.set(full, 1, nx=True, px=seconds * 1000):
        return 0
    return max(1, -(-int(await redis.pttl(full)) // 1000))
