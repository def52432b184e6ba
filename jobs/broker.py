"""The one Dramatiq broker (Redis) and its middleware, set up when `jobs` is imported.

`dramatiq jobs` imports this package, so the broker has to exist at import time: it reads
REDIS_URL and REDIS_NAMESPACE then, and connects to nothing until used. The rest of the settings
are read and checked when a worker boots (`Resources`), so that importing `jobs` to send a
message never fails on a setting the sender does not need.
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
from jobs.wakeup import WebhookWakeup
from require2fa.settings import Settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Seconds a worker may stay silent before its unacknowledged messages go to another worker.
HEARTBEAT_TIMEOUT_MS = 15_000


def build_broker(redis_url: str, namespace: str) -> RedisBroker:
    middleware = [
        AgeLimit(),  # drops messages older than their max_age, if an actor sets one
        TimeLimit(),  # a stuck actor is interrupted (per-actor time_limit)
        ShutdownNotifications(),  # lets long actors notice a worker shutdown
        Callbacks(),
        Pipelines(),
        Retries(max_retries=20, min_backoff=500, max_backoff=300_000),  # default policy
        CurrentMessage(),  # actors can read their own message id
        AsyncIO(),  # runs `async def` actors on one event-loop thread per worker process
        Resources(),  # reads the settings, opens the asyncpg pool and Redis client on that thread
        WebhookWakeup(),  # `webhooks` workers: the trigger's pg_notify sends webhooks.dispatch
    ]
    return RedisBroker(
        url=redis_url,
        namespace=namespace,
        middleware=middleware,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
    )


broker = build_broker(
    os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
    os.environ.get("REDIS_NAMESPACE") or Settings.redis_namespace,
)
dramatiq.set_broker(broker)
