"""The embedded default starts real PostgreSQL, Redis and SMTP servers and leaves none behind."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio

from commands.devstack import (
    DevStackError,
    MailSink,
    Services,
    embedded_services,
    resolve_services,
    tcp_open,
)

# Its tests share one data directory (`data_dir`): one process runs them all.
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("devstack")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the tests of this module, so that only the first one pays for initdb."""
    return tmp_path_factory.mktemp("devstack")


def server_pids(data_dir: Path) -> list[int]:
    """The pids of the running embedded PostgreSQL and Redis, from their pid files."""
    pid_files = [data_dir / "postgres" / "postmaster.pid", data_dir / "redis" / "redis.pid"]
    return [int(path.read_text().split()[0]) for path in pid_files]


def alive(pid: int) -> bool:
    """Whether the process runs; a zombie that its new parent has not reaped yet does not count."""
    if not Path("/proc/self").exists():  # no procfs: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def ports(services: Services) -> list[int]:
    urls = [services.database_url, services.redis_url, services.smtp_url]
    return [port for url in urls if (port := urlsplit(url).port) is not None]


def assert_all_gone(pids: list[int], open_ports: list[int]) -> None:
    assert [pid for pid in pids if alive(pid)] == []
    assert [port for port in open_ports if tcp_open("127.0.0.1", port)] == []


def send_mail(smtp_url: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "someone@example.com"
    message["Subject"] = subject
    message.set_content("Hello from the test.")
    with smtplib.SMTP("127.0.0.1", urlsplit(smtp_url).port or 25, timeout=10) as smtp:
        smtp.send_message(message)


async def test_embedded_services_start_serve_and_stop(data_dir: Path) -> None:
    with embedded_services(data_dir) as services:
        pids = server_pids(data_dir)
        assert services.database_url.startswith("postgresql://postgres@127.0.0.1:")
        assert all(tcp_open("127.0.0.1", port) for port in ports(services))

        conn = await asyncpg.connect(services.database_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "require2fa"
            assert await conn.fetchval("SHOW server_version_num") >= "160000"
        finally:
            await conn.close()

        client = redis.asyncio.Redis.from_url(services.redis_url)
        try:
            await client.set("devstack-test", "yes")
            assert await client.get("devstack-test") == b"yes"
        finally:
            await client.aclose()

        send_mail(services.smtp_url, "Hello sink")
        [eml] = list(services.mail_dir.glob("*.eml"))
        assert b"Subject: Hello sink" in eml.read_bytes()

    assert_all_gone(pids, ports(services))


async def test_second_start_reuses_the_data_directory(data_dir: Path) -> None:
    with embedded_services(data_dir, with_smtp=False) as services:
        conn = await asyncpg.connect(services.database_url)
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (note text)")
        await conn.execute("INSERT INTO kept VALUES ('from the first start')")
        await conn.close()
    initialised = (data_dir / "postgres" / "PG_VERSION").stat().st_mtime

    started = time.monotonic()
    with embedded_services(data_dir, with_smtp=False) as services:
        seconds = time.monotonic() - started
        conn = await asyncpg.connect(services.database_url)
        assert await conn.fetchval("SELECT note FROM kept") == "from the first start"
        await conn.close()
    assert (data_dir / "postgres" / "PG_VERSION").stat().st_mtime == initialised
    assert seconds < 10


def test_an_error_inside_the_context_stops_every_server(data_dir: Path) -> None:
    with pytest.raises(ZeroDivisionError), embedded_services(data_dir) as services:
        pids = server_pids(data_dir)
        1 / 0  # noqa: B018
    assert_all_gone(pids, ports(services))


async def test_a_second_stack_on_the_same_directory_is_refused(data_dir: Path) -> None:
    with embedded_services(data_dir, with_smtp=False) as services:
        second = embedded_services(data_dir, with_smtp=False)
        with pytest.raises(DevStackError, match="in use by process"):
            second.__enter__()
        conn = await asyncpg.connect(services.database_url)  # the first one still serves
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()


HOLD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from urllib.parse import urlsplit
    from commands.devstack import embedded_services

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if our parent ignores it
    data_dir = Path(sys.argv[1])
    with embedded_services(data_dir) as services:
        pids = [(data_dir / name).read_text().split()[0]
                for name in ("postgres/postmaster.pid", "redis/redis.pid")]
        ports = [str(urlsplit(url).port)
                 for url in (services.database_url, services.redis_url, services.smtp_url)]
        print("READY", " ".join(pids), " ".join(ports), flush=True)
        time.sleep(300)
    """
)


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        signal.SIGINT,
        pytest.param(
            signal.SIGKILL,
            marks=pytest.mark.skipif(
                not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only"
            ),
        ),
    ],
)
def test_a_signal_to_the_owner_stops_every_server(data_dir: Path, signum: int) -> None:
    command = [sys.executable, "-c", HOLD, str(data_dir)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as owner:
        assert owner.stdout is not None
        for line in owner.stdout:
            if line.startswith("READY"):
                numbers = [int(word) for word in line.split()[1:]]
                break
        else:
            pytest.fail(f"the stack did not start (exit code {owner.wait()})")
        pids, open_ports = numbers[:2], numbers[2:]
        assert all(alive(pid) for pid in pids)

        owner.send_signal(signum)
        owner.communicate(timeout=60)

    deadline = time.monotonic() + 30  # after SIGKILL the kernel signals the servers asynchronously
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_all_gone(pids, open_ports)


def test_mail_sink_stores_each_message_as_a_numbered_eml(tmp_path: Path) -> None:
    with MailSink(tmp_path / "mail") as sink:
        send_mail(sink.url, "first")
        send_mail(sink.url, "second")
    with MailSink(tmp_path / "mail") as sink:  # a new sink continues the numbering
        send_mail(sink.url, "third")
        assert [path.name for path in sink.files()] == ["000001.eml", "000002.eml", "000003.eml"]
        assert [message["Subject"] for message in sink.messages()] == ["first", "second", "third"]
    assert not tcp_open("127.0.0.1", sink.port)
    assert not list((tmp_path / "mail").glob(".*.tmp"))


def test_resolve_services_uses_the_configured_urls_and_starts_nothing(tmp_path: Path) -> None:
    environ = {
        "DATABASE_URL": "postgresql://app@db.example:5432/app",
        "REDIS_URL": "redis://cache.example:6379/1",
        "SMTP_URL": "smtp://mail.example:587",
    }
    with resolve_services(tmp_path, environ) as services:
        assert services.database_url == environ["DATABASE_URL"]
        assert services.redis_url == environ["REDIS_URL"]
        assert services.smtp_url == environ["SMTP_URL"]
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_resolve_services_can_be_forced_to_the_embedded_servers(data_dir: Path) -> None:
    environ = {
        "DATABASE_URL": "postgresql://app@db.example:5432/app",
        "REDIS_URL": "redis://cache.example:6379/1",
        "REQUIRE2FA_EMBEDDED": "1",
    }
    with resolve_services(data_dir, environ, with_smtp=False) as services:
        pids = server_pids(data_dir)
        assert services.database_url.endswith("/require2fa")
        assert urlsplit(services.database_url).port not in (None, 5432)
        assert urlsplit(services.redis_url).port not in (None, 6379)
        assert services.smtp_url == ""
    assert_all_gone(pids, ports(services))
