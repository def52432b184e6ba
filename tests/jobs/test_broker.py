"""How the Redis broker's consumers take messages: at most `QUEUE_PREFETCH` of the enforcement
queue, a look every `FULL_POLL_MS` while they hold that many, and idle consumers of a
`WAKE_QUEUES` queue woken by a message instead of sleeping until their next poll."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from jobs.broker import QUEUE_PREFETCH, WAKE_KEEP, WAKE_TTL_MS, build_broker
from jobs.enforcement import BATCHES_AT_ONCE, QUEUE


@pytest.fixture
def own_broker(redis_url: str) -> Iterator[Any]:
    """A Redis broker of its own namespace, with one actor on the enforcement queue."""
    namespace = f"require2fa-test-broker-{uuid.uuid4().hex[:8]}"
    broker = build_broker(redis_url, namespace, middleware=[])

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="test.noop")
    def noop() -> None: ...

    @dramatiq.actor(broker=broker, queue_name="elsewhere", actor_name="test.other")
    def other() -> None: ...

    yield broker, noop, other
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)
    client.close()


def test_the_enforcement_queue_is_taken_a_few_messages_at_a_time(own_broker: Any) -> None:
    broker, noop, _ = own_broker
    assert QUEUE_PREFETCH[QUEUE] == BATCHES_AT_ONCE + 1
    consumer = broker.consume(QUEUE, prefetch=8, timeout=1000)
    assert consumer.prefetch == BATCHES_AT_ONCE + 1
    assert broker.consume("email", prefetch=8, timeout=1000).prefetch == 8
    for _ in range(5):
        noop.send()
    held = []
    while len(held) < consumer.prefetch:
        message = next(consumer)
        if message is not None:
            held.append(message)
    # Full: it takes nothing more, and looks again within milliseconds rather than backing off.
    started = time.perf_counter()
    assert next(consumer) is None
    assert time.perf_counter() - started < 0.05
    consumer.ack(held.pop())
    message = None
    while message is None:
        message = next(consumer)
    assert message.actor_name == "test.noop"
    consumer.close()


def test_an_idle_consumer_is_woken_by_a_message(own_broker: Any) -> None:
    broker, noop, other = own_broker
    consumer = broker.consume(QUEUE, prefetch=1, timeout=1000)
    consumer.timeout = 5000  # a backoff that would sleep for seconds without the wake-up
    consumer.misses = 20
    got: list[float] = []

    def consume() -> None:
        while True:
            message = next(consumer)
            if message is not None:
                got.append(time.perf_counter())
                return

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)  # the consumer found nothing and waits
    sent = time.perf_counter()
    noop.send()
    thread.join(timeout=10)
    assert got and got[0] - sent < 1.0
    consumer.close()
    # Only the queues that are woken get wake-ups; nobody listening keeps a few, for a minute.
    client = broker.client
    other.send()
    assert not client.exists(broker.wake_key("elsewhere"))
    for _ in range(WAKE_KEEP + 10):
        noop.send()
    assert client.llen(broker.wake_key(QUEUE)) == WAKE_KEEP
    assert 0 < client.pttl(broker.wake_key(QUEUE)) <= WAKE_TTL_MS
