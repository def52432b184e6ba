"""What async actors share in a worker process: settings, the asyncpg pool, a Redis client.

Created on Dramatiq's event-loop thread when the worker boots, closed when it shuts down.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import asyncpg
import dramatiq
import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import MiddlewareError
from typing_extensions import override

from db.pool import create_pool_checked
from require2fa.reach import Unreachable
from require2fa.settings import Settings, SettingsError


def _stop_event_loop() -> None:
    loop_thread = get_event_loop_thread()
    if loop_thread is not None:
        loop_thread.stop()
        loop_thread.join()


# Connections a worker process keeps open while idle: one per batch it removes at once
# (`jobs.enforcement.BATCHES_AT_ONCE`) and one for a coordinator, so that a run that starts after
# a quiet spell does not first wait for new connections (a new PostgreSQL session, its codecs,
# its first plans). The pool still grows to `POOL_MAX` under load.
POOL_MIN = 3
POOL_MAX = 10


class InvalidSettings(MiddlewareError):
    """A setting is missing or malformed: the worker cannot start."""


class Resources(dramatiq.Middleware):
    current: Resources | None = None

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._pool: asyncpg.Pool | None = None
        self._redis: aioredis.Redis | None = None

    @override
    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # A bad setting or an unreachable database ends the worker process (and with it
        # `dramatiq jobs`) with one line: SystemExit passes through Dramatiq and multiprocessing
        # without a traceback. In-process workers (the tests') get the InvalidSettings.
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None, "the AsyncIO middleware must come first"
        try:
            self._settings = Settings.from_env(os.environ)
            database_url = self._settings.database_url
            if not database_url:
                raise SettingsError("DATABASE_URL", "not set; the workers need it")
            if not self._settings.redis_url and not self._settings.development:
                raise SettingsError("REDIS_URL", "not set; the workers need it")
            self._pool = loop_thread.run_coroutine(
                create_pool_checked(database_url, min_size=POOL_MIN, max_size=POOL_MAX)
            )
        except (SettingsError, Unreachable) as err:
            sys.stderr.write(f"error: {err}\n")
            sys.stderr.flush()
            _stop_event_loop()  # its thread would keep the failed process alive
            if multiprocessing.parent_process() is not None:  # a `dramatiq jobs` worker process
                raise SystemExit(2) from None
            raise InvalidSettings(str(err)) from None
        self._redis = aioredis.Redis.from_url(self.settings.redis_url or "redis://127.0.0.1:6379/0")
        if self._settings.worker_nice and multiprocessing.parent_process() is not None:
            # A `dramatiq jobs` worker process (never the tests' in-process workers): its
            # threads, the event loop's included, all take the lower priority.
            os.nice(self._settings.worker_nice)
        Resources.current = self

    @override
    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and self._pool is not None:
            loop_thread.run_coroutine(self._pool.close())
            loop_thread.run_coroutine(self._redis.aclose())  # type: ignore[union-attr]
        self._pool = self._redis = None
        Resources.current = None

    @property
    def settings(self) -> Settings:
        assert self._settings is not None, "worker not booted"
        return self._settings

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "worker not booted"
        return self._pool

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None, "worker not booted"
        return self._redis


def current() -> Resources:
    """The booted worker's resources (inside an actor)."""
    assert Resources.current is not None, "no worker has booted in this process"
    return Resources.current
