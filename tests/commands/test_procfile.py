"""The Procfile under honcho, the way the README says to run it: migrate, then `honcho start web
worker clock`; /healthz answers, an enforcement runs to its end through the workers, and SIGTERM
stops everything within honcho's 5 seconds (no SIGKILL)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from commands.devstack import free_port
from tests.factories import add_member, create_user, owner_and_org, token_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
HONCHO = Path(sys.executable).with_name("honcho")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux, through /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


async def test_honcho_runs_the_procfile_end_to_end(
    tmp_path, database, redis_url, pool, settings, smtp_server, mailbox
) -> None:
    if not HONCHO.exists() and shutil.which("honcho") is None:
        pytest.fail("honcho is a dev dependency: pip install -e '.[dev]'")
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "SECRET_KEY": "procfile-test-" + "k" * 40,
        "BASE_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": settings.redis_namespace,
        "SMTP_URL": settings.smtp_url,
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # The README's way: `require2fa migrate && honcho start web worker clock`.
    migrate = await asyncio.to_thread(
        subprocess.run,
        ["require2fa", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as log:
        honcho = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [str(HONCHO), "start", "web", "worker", "clock"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        owner, org = await owner_and_org(pool, "procfile", "owner@example.com", has2fa=True)
        for n in range(30):
            await add_member(pool, org["id"], await create_user(pool, f"m{n}@example.com"))
        headers = await token_for(pool, owner["id"])
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert honcho.poll() is None, log_path.read_text()[-3000:]
                await asyncio.sleep(0.2)
            else:
                pytest.fail(f"/healthz never answered:\n{log_path.read_text()[-3000:]}")
            async with http.put(
                f"{base}/api/0/organizations/procfile/", json={"require2FA": True}, headers=headers
            ) as response:
                assert response.status == 200, await response.text()
                run_id = (await response.json())["enforcement"]["id"]
            run_url = f"{base}/api/0/organizations/procfile/2fa-enforcements/{run_id}/"
            for _ in range(600):
                async with http.get(run_url, headers=headers) as response:
                    run = await response.json()
                if run["status"] == "completed" and run["emailsSent"] == 30:
                    break
                await asyncio.sleep(0.2)
            assert run["status"] == "completed" and run["removed"] == 30, run
            assert run["emailsSent"] == 30, run
        removed = [m for m in mailbox.messages if "Mandatory" in str(m["Subject"])]
        assert len(removed) == 30

        processes = _descendants(honcho.pid)
        assert len(processes) >= 4  # web, clock, and dramatiq's parent and worker processes
        stopped_at = time.monotonic()
        honcho.send_signal(signal.SIGTERM)
        await asyncio.to_thread(honcho.wait, 30)
        seconds = time.monotonic() - stopped_at
        output = log_path.read_text()
        assert "SIGKILL" not in output, output[-3000:]
        assert seconds < 5, (seconds, output[-3000:])
        assert [pid for pid in processes if _alive(pid)] == []
        # Every process logged JSON lines with the same keys.
        lines = [
            json.loads(line.split("| ", 1)[1]) for line in output.splitlines() if "| {" in line
        ]
        assert {"web", "worker", "clock"} <= {line.get("process") for line in lines}, output[-3000:]
    finally:
        if honcho.poll() is None:
            honcho.kill()
            honcho.wait()
