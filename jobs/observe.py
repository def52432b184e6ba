"""What a worker says about itself: its log lines and its message figures.

`Observe` is a Dramatiq middleware. In a `dramatiq jobs` worker process it configures logging
(LOG_FORMAT, the same keys as the web process, `message_id` and `actor` on every line logged
while a message is processed). For each message it counts, in one Redis hash per namespace, what
Dramatiq's own Prometheus middleware counts (messages, errors, retries, dead letters, and a
duration histogram), so that the web process's `/metrics` shows the figures of every worker on
every host without a scrape target per worker process. A Redis failure loses a figure, never a
message.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import dramatiq
import redis
import redis.asyncio as aioredis
import structlog
from typing_extensions import override

from require2fa import logs

log = structlog.get_logger(__name__)

# Dramatiq's Prometheus middleware's buckets (milliseconds).
DURATION_BUCKETS_MS = (
    5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000, 60000,
    600000, 900000,
)  # fmt: skip


def metrics_key(namespace: str) -> str:
    return f"{namespace}:metrics:dramatiq"


def emails_key(namespace: str) -> str:
    return f"{namespace}:metrics:emails"


async def count_emails(
    client: aioredis.Redis, namespace: str, *, sent: int, retried: int, failed: int
) -> None:
    """Adds one dispatch's outcome to the counters `/metrics` shows (best effort)."""
    try:
        pipe = client.pipeline(transaction=False)
        for field, amount in (("sent", sent), ("retried", retried), ("failed", failed)):
            if amount:
                pipe.hincrby(emails_key(namespace), field, amount)
        await pipe.execute()
    except (redis.RedisError, OSError) as err:
        log.warning("metrics not recorded", error=str(err))


def bucket_of(duration_ms: float) -> str:
    """The (non-cumulative) bucket a duration falls in; `/metrics` adds them up."""
    for bound in DURATION_BUCKETS_MS:
        if duration_ms <= bound:
            return str(bound)
    return "+Inf"


# A second SIGTERM this soon after the first is the same request to stop, not a harder one.
SAME_STOP_SECONDS = 2.0


def _one_sigterm_per_stop() -> None:
    """Process managers that signal a whole process group (honcho, foreman, `kill -TERM -pgid`)
    reach a worker process twice at once: directly, and through Dramatiq's parent, which
    forwards it. Dramatiq takes a second SIGTERM as "kill now", which leaves the process waiting
    on its own threads until SIGKILL. Here a SIGTERM within SAME_STOP_SECONDS of the first is
    taken as the same one; a later one still kills."""
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return
    first: list[float] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if first and now - first[0] < SAME_STOP_SECONDS:
            return
        first[:] = [now]
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


class Observe(dramatiq.Middleware):
    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis_url = redis_url
        self.key = metrics_key(namespace)
        self._local = threading.local()
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:  # made on first use: importing `jobs` connects to nothing
            self._client = redis.Redis.from_url(
                self.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._client

    @override
    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # Only `dramatiq jobs` worker processes emit this (in-process test workers do not).
        logs.configure(os.environ.get("LOG_FORMAT") or "text", process="worker", keep_streams=True)
        _one_sigterm_per_stop()

    @override
    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._local.started = time.perf_counter()
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, actor=message.actor_name
        )

    @override
    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = getattr(self._local, "started", None)
        self._local.started = None
        structlog.contextvars.unbind_contextvars("message_id", "actor")
        labels = f"{message.queue_name}|{message.actor_name}"
        fields = {f"total|{labels}": 1}
        if exception is not None:
            fields[f"errors|{labels}"] = 1
        if started is not None:
            duration_ms = (time.perf_counter() - started) * 1000
            fields[f"bucket|{labels}|{bucket_of(duration_ms)}"] = 1
            self._count(fields, duration=(f"sum|{labels}", duration_ms))
        else:
            self._count(fields)

    after_skip_message = after_process_message

    @override
    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        if "retries" in message.options:
            self._count({f"retries|{message.queue_name}|{message.actor_name}": 1})

    @override
    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self._count({f"rejects|{message.queue_name}|{message.actor_name}": 1})

    def _count(self, fields: dict[str, int], duration: tuple[str, float] | None = None) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for field, amount in fields.items():
                pipe.hincrby(self.key, field, amount)
            if duration is not None:
                pipe.hincrbyfloat(self.key, duration[0], duration[1])
            pipe.execute()
        except redis.RedisError as err:
            log.warning("metrics not recorded", error=str(err))
