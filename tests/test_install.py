"""The project installed as a package (`pip install .`, not editable, into a fresh venv): the web
app it installs serves the pages and the static files, and every email template renders. What is
not declared as package data is missing there, whatever the source tree holds."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from commands.devstack import free_port
from tests.conftest import NAMESPACE
from tests.test_emails_render import CASES

# One process runs them all, so that the venv (`installed`) is made once.
pytestmark = [pytest.mark.install, pytest.mark.timeout(400), pytest.mark.xdist_group("install")]
ROOT = Path(__file__).resolve().parents[1]
# What `pip install .` reads; the rest of the tree (tests, venvs, caches) stays behind.
LEFT_BEHIND = (".*", "build", "*.egg-info", "__pycache__", "tests", "bench", "screens")

RENDER_EVERY_EMAIL = """
import json, sys
from db.outbox import TEMPLATES
from require2fa.emails import render
from require2fa.settings import Settings

settings = Settings(base_url="https://2fa.example.com")
cases = json.load(sys.stdin)
assert {template for template, _ in cases} == set(TEMPLATES), "a template without a case"
for template, context in cases:
    rendered = render(template, context, settings)
    assert rendered.subject and rendered.html and rendered.text, template
print(json.dumps(sorted({template for template, _ in cases})))
"""


def _run(
    command: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (in a temporary directory) with the project installed from a copy of its tree;
    its `bin/`. pip uses its cache and the configured index, as `make venv` does."""
    where = tmp_path_factory.mktemp("install")
    source = where / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LEFT_BEHIND))
    venv = where / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "install", str(source)], cwd=where)
    return venv / "bin"


def _environment(where: Path, **extra: str) -> dict[str, str]:
    """Our environment without the source tree on the path: imports come from the venv."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    return {**env, "PATH": f"{where}{os.pathsep}{env.get('PATH', '')}", **extra}


def test_the_package_is_the_installed_one(installed: Path) -> None:
    found = _run(
        [str(installed / "python"), "-c", "import api, require2fa; print(api.__file__)"],
        cwd=installed.parent,
        env=_environment(installed),
    )
    assert Path(found.stdout.strip()).is_relative_to(installed.parent)


def test_every_email_renders_from_the_package(installed: Path) -> None:
    cases = [[case.values[0], case.values[1]] for case in CASES]
    rendered = _run(
        [str(installed / "python"), "-c", RENDER_EVERY_EMAIL],
        stdin=json.dumps(cases),
        cwd=installed.parent,
        env=_environment(installed),
    )
    assert json.loads(rendered.stdout) == sorted({case.values[0] for case in CASES})


@pytest.fixture
async def web(installed: Path, database: str, redis_url: str) -> AsyncIterator[str]:
    """`require2fa web` of the installed package against the test database; its address."""
    port = free_port()
    env = _environment(
        installed,
        ENVIRONMENT="development",
        DATABASE_URL=database,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE=NAMESPACE,
        PORT=str(port),
        BASE_URL=f"http://127.0.0.1:{port}",
        LOG_FORMAT="json",
    )
    log_path = installed.parent / "web.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(installed / "require2fa"),
            "web",
            cwd=installed.parent,
            env=env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(300):
                if process.returncode is not None:
                    pytest.fail(f"require2fa web stopped: {log_path.read_text()}")
                try:
                    async with client.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"require2fa web did not answer /healthz: {log_path.read_text()}")
        yield url
    finally:
        process.terminate()
        await process.wait()


async def test_the_installed_web_app_serves_pages_and_static_files(web: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{web}/auth/login/") as response:
            assert response.status == 200
            page = await response.text()
        assert "<form" in page
        assert "/static/app.css" in page
        async with client.get(f"{web}/static/app.css") as response:
            assert response.status == 200
            assert "text/css" in response.headers["Content-Type"]
            assert len(await response.read()) > 100
