"""What the actors count as a passing failure, worth another delivery with backoff."""

from __future__ import annotations

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
