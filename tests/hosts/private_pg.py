"""A PostgreSQL server of the test's own, listening on the veths' root ends as well as on
127.0.0.1, so that hosts in namespaces reach it directly (no forwarder between): then the
server itself has to notice a host that vanishes. The test run's shared server listens on
127.0.0.1 only and is not reconfigured. PostgreSQL refuses to run as root: the system user
`postgres` runs this one. Removed on exit, data and all."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

from tests.hosts.netns import Unavailable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def server(addresses: Sequence[str]) -> Iterator[int]:
    """Starts the server on 127.0.0.1 and `addresses` (trusting 10.231.0.0/16); its port."""
    initdb = shutil.which("initdb")
    postgres = shutil.which("postgres")
    if initdb is None or postgres is None or shutil.which("runuser") is None:
        raise Unavailable("initdb, postgres or runuser is not installed")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("no system user `postgres` to run PostgreSQL as") from None
    data = tempfile.mkdtemp(prefix="r2fh-pg-")
    os.chmod(data, 0o700)
    os.chown(data, owner.pw_uid, owner.pw_gid)
    process = None
    try:
        made = subprocess.run(
            _as_postgres(initdb, "-D", data, "--auth=trust", "-U", "postgres", "--no-sync"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode != 0:
            raise Unavailable(f"initdb failed: {made.stderr.strip()[-500:]}")
        with open(f"{data}/pg_hba.conf", "a") as hba:
            hba.write("host all all 10.231.0.0/16 trust\n")
        port = _free_port()
        process = subprocess.Popen(
            _as_postgres(
                postgres,
                "-D",
                data,
                "-p",
                str(port),
                "-c",
                f"listen_addresses={','.join(['127.0.0.1', *addresses])}",
                "-c",
                f"unix_socket_directories={data}",
                "-c",
                "fsync=off",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "max_connections=80",
            ),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Accepting connections (not only listening: it listens while it starts up).
        ready = [shutil.which("pg_isready") or "pg_isready", "-q", "-h", "127.0.0.1"]
        deadline = time.monotonic() + 60
        while subprocess.run([*ready, "-p", str(port)], timeout=30).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise Unavailable("the private PostgreSQL did not start")
            time.sleep(0.2)
        yield port
    finally:
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(data, ignore_errors=True)
