"""The one Dramatiq broker and its middleware, set up when `jobs` is imported.

`BROKER_URL` picks the broker: `amqp://…` (or `amqps://…`) selects Dramatiq's RabbitMQ broker,
whose queues are durable and whose messages are persistent, so queued work outlives a broker
restart; anything else (or nothing) selects the Redis broker at `BROKER_URL`, else `REDIS_URL`.
Redis stays in use for rate limits, codes and the email dispatcher's slots either way.

`dramatiq jobs` imports this package, so the broker has to exist at import time: it reads
BROKER_URL, REDIS_URL and REDIS_NAMESPACE then, and connects to nothing until used. The rest of
the settings are read and checked when a worker boots (`Resources`), so that importing `jobs` to
send a message never fails on a setting the sender does not need.

How a dead worker's messages come back (what the fault tests measure, docs/RELIABILITY.md):
- Redis: every broker command of a worker process refreshes its heartbeat; a command has a
  `MAINTENANCE_CHANCE` in a million of also moving back to their queue the unacknowledged
  messages of workers silent for `HEARTBEAT_TIMEOUT_MS`. Dramatiq's default chance (1,000) is so
  low that an idle deployment, polling about once a second per queue, took minutes to notice.
- RabbitMQ: the server puts a consumer's unacknowledged messages back as soon as its connection
  closes: at once when the process dies, after about two `AMQP_HEARTBEAT_SECONDS` when its host
  drops off the network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from jobs.observe import Observe
from jobs.resources import Resources
from jobs.wakeup import Wakeup
from require2fa.settings import Settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Seconds a worker may stay silent before its unacknowledged messages go to another worker.
HEARTBEAT_TIMEOUT_MS = 15_000
# Out of a million Redis broker commands, how many also requeue dead workers' messages (10%).
MAINTENANCE_CHANCE = 100_000
# AMQP heartbeat asked for when BROKER_URL names none: a silent peer is dropped after ~2 of these.
AMQP_HEARTBEAT_SECONDS = 15
# An idle Redis consumer polls its queue with a backoff that grows up to this many milliseconds
# (Dramatiq's worker timeout, 1,000 by default): the longest a message sent to an idle worker
# waits before it is picked up. A run's coordinator and its first batches are such messages.
IDLE_POLL_MS = 100


# Messages a worker process takes from a queue before it has finished the ones it holds, where
# Dramatiq's default (two per worker thread) is too many. A process removes at most
# `jobs.enforcement.BATCHES_AT_ONCE` (2) batches at once: had it taken eight batch messages, it
# would run them two by two while the other process, having found the queue empty, idles (a
# 10k run's eleven batches went seven to one process and four to the other). It takes the
# batches it runs and one more message: the next batch, which starts as soon as a slot frees,
# or the run's coordinator, which then keeps no batch from starting while it sends the rest.
QUEUE_PREFETCH = {"enforcement": 3}
# While a Redis consumer holds as many messages as it may, it looks this often (ms) whether one
# is done, instead of backing off up to `IDLE_POLL_MS` as it does when the queue is empty: the
# next batch starts within milliseconds of a slot freeing, not up to a tenth of a second later.
FULL_POLL_MS = 5
# Queues whose idle consumers wait for a wake-up instead of sleeping between two polls: sending
# a message to one of them also pushes to its wake-up list, on which idle consumers block (for
# as long as they would have slept). A run's coordinator and its first batches start within
# milliseconds instead of up to `IDLE_POLL_MS` later, for the same number of Redis commands.
WAKE_QUEUES = frozenset({"enforcement"})
WAKE_KEEP = 64  # wake-ups kept for nobody listening (each costs a consumer one extra poll)
WAKE_TTL_MS = 60_000


def queue_prefetch(queue_name: str, prefetch: int) -> int:
    """The prefetch of a queue's consumer: `QUEUE_PREFETCH`'s, where it names the queue."""
    return min(prefetch, QUEUE_PREFETCH.get(queue_name, prefetch))


class _Consumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except that while it holds `prefetch` messages it looks again
    every `FULL_POLL_MS` for a free slot (Dramatiq's backs off as if the queue were empty), and
    that an idle consumer of a `WAKE_QUEUES` queue waits on the queue's wake-up list."""

    def __next__(self) -> Any:
        if self.message_cache:
            return super().__next__()
        if self.outstanding_message_count >= self.prefetch:
            time.sleep(FULL_POLL_MS / 1000)
            return None  # the consumer thread handles delayed messages, then asks again
        try:
            self.message_cache = self.broker.do_fetch(
                self.queue_name, self.prefetch - self.outstanding_message_count
            )
            if self.message_cache:
                return super().__next__()
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            if self.queue_name in WAKE_QUEUES:
                self.broker.client.blpop([self.broker.wake_key(self.queue_name)], backoff_ms / 1000)
            else:
                time.sleep(backoff_ms / 1000)
            return None
        except redis.ConnectionError as err:
            raise ConnectionClosed(err) from None


class _RedisBroker(RedisBroker):
    """Dramatiq's Redis broker, whose idle consumers poll at least every `IDLE_POLL_MS` (or wait
    for a wake-up, `WAKE_QUEUES`) and whose consumers take at most `QUEUE_PREFETCH` messages of
    the queues it names."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        return _Consumer(
            self, queue_name, queue_prefetch(queue_name, prefetch), min(timeout, IDLE_POLL_MS)
        )

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:wake:{queue_name}"

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        if delay is None and message.queue_name in WAKE_QUEUES:
            key = self.wake_key(message.queue_name)
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.rpush(key, 1).ltrim(key, -WAKE_KEEP, -1).pexpire(key, WAKE_TTL_MS)
                pipe.execute()
            except redis.RedisError:
                pass  # the message is queued: the consumers' next poll finds it anyway
        return enqueued


class _RabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, whose consumers take at most `QUEUE_PREFETCH` messages of the
    queues it names (the server hands over the next one as soon as one is acknowledged)."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        return super().consume(queue_name, queue_prefetch(queue_name, prefetch), timeout)


def is_amqp(url: str) -> bool:
    return urlsplit(url).scheme in ("amqp", "amqps")


def broker_url(environ: Mapping[str, str]) -> str:
    """BROKER_URL, else REDIS_URL, else the local Redis."""
    return environ.get("BROKER_URL") or environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def _with_heartbeat(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if not any(key == "heartbeat" for key, _ in query):
        query.append(("heartbeat", str(AMQP_HEARTBEAT_SECONDS)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def worker_middleware(redis_url: str, namespace: str) -> list[Middleware]:
    return [
        # Logging set-up in worker processes, message ids on log lines, message figures (in Redis).
        Observe(redis_url, namespace),
        AgeLimit(),  # drops messages older than their max_age, if an actor sets one
        TimeLimit(),  # a stuck actor is interrupted (per-actor time_limit)
        ShutdownNotifications(),  # lets long actors notice a worker shutdown
        Callbacks(),
        Pipelines(),
        Retries(max_retries=20, min_backoff=500, max_backoff=300_000),  # default policy
        CurrentMessage(),  # actors can read their own message id
        AsyncIO(),  # runs `async def` actors on one event-loop thread per worker process
        Resources(),  # reads the settings, opens the asyncpg pool and Redis client on that thread
        # Wake-ups after commit: the database's pg_notify of a committed change sends its
        # message (email.dispatch, webhooks.dispatch, enforcement.coordinate) for the queues
        # this worker consumes.
        Wakeup(),
    ]


def build_broker(
    url: str,
    namespace: str,
    *,
    middleware: list[Middleware] | None = None,
    redis_url: str | None = None,
) -> dramatiq.Broker:
    """The broker at `url` (`amqp://` RabbitMQ, else Redis). `middleware=[]` gives a broker that
    only sends (the clock's). `redis_url` is where the message figures go (default: REDIS_URL, or
    `url` itself for a Redis broker)."""
    if redis_url is None:
        redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL if is_amqp(url) else url
    if middleware is None:
        middleware = worker_middleware(redis_url, namespace)
    if is_amqp(url):
        # confirm_delivery: `send()` returns once RabbitMQ has taken the message (persistent, on
        # a durable queue), so "enqueue after commit" means the message survives what follows.
        return _RabbitmqBroker(
            url=_with_heartbeat(url), confirm_delivery=True, middleware=middleware
        )
    return _RedisBroker(
        url=url,
        namespace=namespace,
        middleware=middleware,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )


broker = build_broker(
    broker_url(os.environ),
    os.environ.get("REDIS_NAMESPACE") or Settings.redis_namespace,
)
dramatiq.set_broker(broker)
