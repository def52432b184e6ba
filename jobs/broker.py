"""The one Dramatiq broker (Redis) and its middleware, set up when `jobs` is imported.

`dramatiq jobs` imports this package, so the broker has to exist at import time; its settings
come from the environment like every other process's. Connections open lazily: importing
connects to nothing.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from jobs.resources import Resources
from require2fa.settings import Settings

# Seconds a worker may stay silent before its unacknowledged messages go to another worker.
HEARTBEAT_TIMEOUT_MS = 15_000


def build_broker(settings: Settings) -> RedisBroker:
    middleware = [
        AgeLimit(),  # drops messages older than their max_age, if an actor sets one
        TimeLimit(),  # a stuck actor is interrupted (per-actor time_limit)
        ShutdownNotifications(),  # lets long actors notice a worker shutdown
        Callbacks(),
        Pipelines(),
        Retries(max_retries=20, min_backoff=500, max_backoff=300_000),  # default policy
        CurrentMessage(),  # actors can read their own message id
        AsyncIO(),  # runs `async def` actors on one event-loop thread per worker process
        Resources(settings),  # opens the asyncpg pool and Redis client on that thread
    ]
    return RedisBroker(
        url=settings.redis_url or "redis://127.0.0.1:6379/0",
        namespace=settings.redis_namespace,
        middleware=middleware,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
    )


settings = Settings.from_env(os.environ)
broker = build_broker(settings)
dramatiq.set_broker(broker)
