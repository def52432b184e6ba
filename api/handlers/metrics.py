"""`GET /metrics` (Prometheus): what an operator alerts on.

- the web process's own: `require2fa_http_requests_total{method,route,status}` and
  `require2fa_http_request_duration_seconds` (api/observe.py);
- enforcement (runs by status, members removed, batch durations) and the email outbox's backlog
  (`require2fa_outbox_pending`, `require2fa_outbox_oldest_pending_seconds`), read from
  PostgreSQL at scrape time with statements that stay cheap at any size (index scans);
- every worker's, from Redis: emails sent, retried and failed
  (`require2fa_emails_sent_total`, ...), Dramatiq's message figures under the names its own
  Prometheus middleware uses (`dramatiq_messages_total`, `dramatiq_message_errors_total`,
  `dramatiq_message_retries_total`, `dramatiq_message_rejects_total`,
  `dramatiq_message_duration_milliseconds`), and the queues' lengths
  (`dramatiq_queue_messages{queue,state}`: waiting, in flight, delayed, dead).

Access: `Authorization: Bearer $METRICS_TOKEN`, compared in constant time; 401 with a wrong or
missing token. Without `METRICS_TOKEN` the endpoint does not exist outside development (404),
and is open in development.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import defaultdict
from typing import Any

import asyncpg
import dramatiq
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from api.connection import request_pool
from api.errors import api_error
from api.keys import REDIS, SETTINGS
from db import metrics as enforcement_metrics
from db import outbox
from jobs.observe import DURATION_BUCKETS_MS, emails_key, metrics_key

log = structlog.get_logger(__name__)

# The lengths a scrape reads per queue (and its delay queue, `<queue>.DQ`).
QUEUES = ("enforcement", "email", "maintenance")


class EnforcementCollector(Collector):
    """Enforcement metrics read from the database at scrape time: the workers that do the work
    cannot be scraped, and the database is where the truth is anyway."""

    def __init__(self) -> None:
        self.values: dict[str, Any] | None = None

    def collect(self) -> Any:
        values = self.values
        if values is None:
            return
        runs = GaugeMetricFamily(
            "require2fa_enforcement_runs", "Enforcement runs by status.", labels=["status"]
        )
        for status, count in values["runs"].items():
            runs.add_metric([status], count)
        yield runs
        yield CounterMetricFamily(
            "require2fa_enforcement_members_removed",
            "Members removed for having no second factor.",
            value=values["removed"],
        )
        cumulative = [(str(bound), count) for bound, count in values["batch_buckets"]]
        yield HistogramMetricFamily(
            "require2fa_enforcement_batch_seconds",
            "Wall time of one enforcement batch's transaction.",
            buckets=[*cumulative, ("+Inf", values["batch_count"])],
            sum_value=values["batch_sum"],
        )


ENFORCEMENT = EnforcementCollector()
REGISTRY.register(ENFORCEMENT)


class OperationsCollector(Collector):
    """The figures read at scrape time (set by the handler just before rendering)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] | None = None

    def collect(self) -> Any:
        values = self.values
        if values is None:
            return
        yield GaugeMetricFamily(
            "require2fa_outbox_pending",
            "Emails in the outbox not yet sent (queued or being sent).",
            value=values["outbox_pending"],
        )
        yield GaugeMetricFamily(
            "require2fa_outbox_oldest_pending_seconds",
            "Age of the oldest email in the outbox not yet sent (0 when there is none).",
            value=values["outbox_oldest_seconds"],
        )
        for name, field, text in (
            ("require2fa_emails_sent", "sent", "Emails the SMTP server accepted."),
            ("require2fa_emails_retried", "retried", "Email attempts that will be retried."),
            ("require2fa_emails_failed", "failed", "Emails given up on (permanent errors)."),
        ):
            yield CounterMetricFamily(name, text, value=values["emails"].get(field, 0))
        yield from _dramatiq_families(values["dramatiq"])
        queues = GaugeMetricFamily(
            "dramatiq_queue_messages",
            "Messages in each queue: waiting, in flight (fetched, not acknowledged), delayed "
            "and dead-lettered.",
            labels=["queue", "state"],
        )
        for queue, states in values["queues"].items():
            for state, count in states.items():
                queues.add_metric([queue, state], count)
        yield queues


def _dramatiq_families(fields: dict[str, float]) -> Any:
    """Dramatiq's Prometheus middleware's metrics, from the `Observe` middleware's hash."""
    counters = {
        kind: CounterMetricFamily(name, text, labels=["queue_name", "actor_name"])
        for kind, name, text in (
            ("total", "dramatiq_messages", "The total number of messages processed."),
            ("errors", "dramatiq_message_errors", "The total number of errored messages."),
            ("retries", "dramatiq_message_retries", "The total number of retried messages."),
            ("rejects", "dramatiq_message_rejects", "The total number of dead-lettered messages."),
        )
    }
    buckets: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    sums: dict[tuple[str, str], float] = {}
    for field, value in fields.items():
        kind, _, rest = field.partition("|")
        parts = rest.split("|")
        if kind in counters and len(parts) == 2:
            counters[kind].add_metric(parts, value)
        elif kind == "bucket" and len(parts) == 3:
            buckets[(parts[0], parts[1])][parts[2]] = value
        elif kind == "sum" and len(parts) == 2:
            sums[(parts[0], parts[1])] = value
    yield from counters.values()
    durations = HistogramMetricFamily(
        "dramatiq_message_duration_milliseconds",
        "The time spent processing messages.",
        labels=["queue_name", "actor_name"],
    )
    for labels, counts in sorted(buckets.items()):
        running, cumulative = 0.0, []
        for bound in (*map(str, DURATION_BUCKETS_MS), "+Inf"):
            running += counts.get(bound, 0)
            cumulative.append((bound, running))
        durations.add_metric(list(labels), cumulative, sums.get(labels, 0.0))
    yield durations


OPERATIONS = OperationsCollector()
REGISTRY.register(OPERATIONS)


async def _redis_figures(client: aioredis.Redis, namespace: str) -> dict[str, Any]:
    """One round trip: the workers' hashes and each queue's lengths."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(metrics_key(namespace))
    pipe.hgetall(emails_key(namespace))
    for queue in QUEUES:
        for name in (queue, f"{queue}.DQ"):
            pipe.llen(f"{namespace}:{name}")
            pipe.hlen(f"{namespace}:{name}.msgs")
        pipe.zcard(f"{namespace}:{queue}.XQ")
    replies = await pipe.execute()
    dramatiq_fields = {k.decode(): float(v) for k, v in replies[0].items()}
    emails = {k.decode(): int(v) for k, v in replies[1].items()}
    queues: dict[str, dict[str, int]] = {}
    rest = replies[2:]
    for n, queue in enumerate(QUEUES):
        waiting, stored, delayed_waiting, delayed_stored, dead = rest[5 * n : 5 * n + 5]
        queues[queue] = {
            "waiting": waiting,
            "in_flight": max(stored - waiting, 0),
            "delayed": delayed_stored,
            "dead": dead,
        }
        del delayed_waiting  # delayed_stored counts those waiting and those a worker holds
    broker = dramatiq.get_broker()
    if isinstance(broker, RabbitmqBroker):  # BROKER_URL=amqp://…: the queues live there
        queues = await asyncio.to_thread(_rabbitmq_queues, broker)
    return {"dramatiq": dramatiq_fields, "emails": emails, "queues": queues}


def _rabbitmq_queues(broker: RabbitmqBroker) -> dict[str, dict[str, int]]:
    """Each queue's ready, delayed and dead-lettered messages, as RabbitMQ counts them (it does
    not count those a consumer holds unacknowledged, so there is no in-flight figure)."""
    queues: dict[str, dict[str, int]] = {}
    for queue in QUEUES:
        waiting, delayed, dead = broker.get_queue_message_counts(queue)
        queues[queue] = {"waiting": waiting, "delayed": delayed, "dead": dead}
    return queues


async def _database_figures(pool: asyncpg.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        runs = await enforcement_metrics.metrics(conn)
        pending, oldest = await outbox.backlog(conn)
    return {"enforcement": runs, "outbox_pending": pending, "outbox_oldest_seconds": oldest}


def _check_token(request: web.Request) -> None:
    """404 when no METRICS_TOKEN is set outside development; 401 unless the request carries it."""
    settings = request.app[SETTINGS]
    if not settings.metrics_token:
        if settings.development:
            return
        raise api_error(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), settings.metrics_token.encode()
    ):
        error = api_error(401, "Metrics need Authorization: Bearer $METRICS_TOKEN.")
        error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        raise error


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: the process's own metrics and the figures read now from PostgreSQL and
    Redis (a store that does not answer leaves its figures out; /healthz says which)."""
    _check_token(request)
    settings = request.app[SETTINGS]
    database: dict[str, Any] | BaseException
    figures: dict[str, Any] | BaseException
    database, figures = await asyncio.gather(
        _database_figures(await request_pool(request)),
        _redis_figures(request.app[REDIS], settings.redis_namespace),
        return_exceptions=True,
    )
    for result in (database, figures):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # a cancellation, not a store's failure
        if isinstance(result, Exception):
            log.warning("metrics: a store did not answer", error=repr(result))
    db_figures = database if isinstance(database, dict) else None
    redis_figures = figures if isinstance(figures, dict) else None
    ENFORCEMENT.values = db_figures["enforcement"] if db_figures is not None else None
    OPERATIONS.values = (
        {**redis_figures, **db_figures}
        if db_figures is not None and redis_figures is not None
        else None
    )
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
