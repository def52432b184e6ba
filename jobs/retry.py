"""What the actors count as a passing failure, worth another delivery with backoff."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis

# Lost connections, timeouts and lock conflicts: the same message will likely succeed later.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
    redis.ConnectionError,
)


def is_transient(exception: BaseException) -> bool:
    return isinstance(exception, TRANSIENT)


def retry_options(
    *, transient: int, other: int = 0, min_backoff: int, max_backoff: int
) -> dict[str, Any]:
    """The retry policy of an actor, as `@dramatiq.actor(**retry_options(...))` takes it:
    transient failures (`TRANSIENT`) are retried up to `transient` times, anything else up to
    `other` times, waiting between `min_backoff` and `max_backoff` milliseconds (exponential)."""

    def retry_when(retries: int, exception: BaseException) -> bool:
        return retries < (transient if is_transient(exception) else other)

    return {"retry_when": retry_when, "min_backoff": min_backoff, "max_backoff": max_backoff}


# For actors that the clock sends again within a minute: a failure waits for the next one.
NO_RETRY: dict[str, Any] = {"max_retries": 0}
