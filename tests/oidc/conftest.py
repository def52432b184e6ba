"""A real OpenID Provider for the single sign-on tests: panva's oidc-provider (pinned in
package.json, installed by `make oidc-provider`), run by provider.mjs with the machine's Node on
a free loopback port, once per session. Missing Node or packages skip locally and fail under
CI=true, like the other services of tests/conftest.py."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from commands.devstack import free_port
from require2fa.settings import Settings

HERE = Path(__file__).parent
REDIRECT_URI = "http://127.0.0.1:9/auth/sso/callback/"  # never opened: the test intercepts it
CLIENTS = {
    # client_id: token endpoint authentication
    "require2fa": "client_secret_basic",
    "require2fa-post": "client_secret_post",
    "another-app": "client_secret_basic",
}
CLIENT_SECRET = "test-client-secret-" + "x" * 24
# The application under test answers at this base, so that its redirect URI
# ({BASE_URL}/auth/sso/callback/) is the one the provider's clients registered.
BASE_URL = REDIRECT_URI.removesuffix("/auth/sso/callback/")


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Provider:
    """The running provider: its issuer, and the admin endpoints that script it."""

    issuer: str

    async def _admin(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.issuer}/admin/{path}", json=body) as response,
        ):
            assert response.status == 200, await response.text()
            return await response.json()

    async def next_login(
        self,
        sub: str,
        email: str,
        *,
        email_verified: bool = True,
        amr: list[str] | None = None,
        acr: str | None = None,
    ) -> None:
        """Who the next sign-in at the provider is, and what it asserts."""
        login: dict[str, Any] = {"sub": sub, "email": email, "email_verified": email_verified}
        if amr is not None:
            login["amr"] = amr
        if acr is not None:
            login["acr"] = acr
        await self._admin("POST", "next-login", login)

    async def rotate_key(self) -> str:
        """A new signing key at the provider; its `kid`."""
        return str((await self._admin("POST", "rotate-key"))["kid"])

    async def tamper(self, **claims: Any) -> None:
        """The next ID token from the token endpoint carries these claims instead."""
        await self._admin("POST", "tamper", {"claims": claims})

    async def jwks(self) -> dict[str, Any]:
        return dict(await self._admin("GET", "jwks"))


async def browse_to_callback(url: str, redirect_uri: str = REDIRECT_URI) -> dict[str, str]:
    """What a browser does with the authorization URL: follows the provider's redirects (with
    its cookies) until one leads to `redirect_uri`; returns that redirect's query."""
    jar = aiohttp.CookieJar(unsafe=True)  # the provider's cookies on 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        for _ in range(10):
            async with http.get(url, allow_redirects=False) as response:
                location = response.headers.get("Location")
                assert response.status in (302, 303), (response.status, await response.text())
            assert location
            url = urljoin(url, location)
            if url.startswith(redirect_uri):
                return dict(parse_qsl(urlsplit(url).query))
    raise AssertionError("the provider never redirected back")


@pytest.fixture(scope="session")
def browser_port() -> int:
    """The port of the application a real browser signs in to (tests/browser/test_sso.py):
    its callback is one of the redirect URIs the provider's clients registered."""
    return free_port()


@pytest.fixture(scope="session")
def oidc_provider(browser_port: int) -> Iterator[Provider]:
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed: the OpenID Provider cannot run")
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        _unavailable("tests/oidc/node_modules is missing: run `make oidc-provider`")
    clients = [
        {
            "client_id": client_id,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [
                REDIRECT_URI,
                f"http://127.0.0.1:{browser_port}/auth/sso/callback/",
            ],
            "token_endpoint_auth_method": method,
            "require_auth_time": True,
        }
        for client_id, method in CLIENTS.items()
    ]
    # Our own script, with the machine's Node.
    process = subprocess.Popen(
        [str(node), str(HERE / "provider.mjs"), json.dumps({"clients": clients})],
        cwd=HERE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    timer = threading.Timer(20, process.kill)  # a provider that never says ready
    timer.start()
    line = process.stdout.readline()
    timer.cancel()
    if not line.startswith("ready "):
        process.kill()
        pytest.fail(f"the OpenID Provider did not start: {line!r}")
    try:
        yield Provider(issuer=line.split()[1])
    finally:
        process.stdin.close()  # provider.mjs exits when its stdin ends
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


# --- The application with single sign-on ----------------------------------------------------


@pytest.fixture
def sso_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, base_url=BASE_URL)


@pytest.fixture
async def web(aiohttp_client, sso_settings: Settings, pool) -> TestClient:
    return await aiohttp_client(create_app(sso_settings))


async def sso_sign_in(
    web: TestClient, provider: Provider, sub: str, email: str, **login: Any
) -> Any:
    """A person signs in through Acme's identity provider in `web`'s browser: our redirect to
    the provider, the provider's redirects, then our callback; the callback's response."""
    await provider.next_login(sub, email, **login)
    started = await web.get("/auth/sso/acme/", allow_redirects=False)
    assert started.status == 303, await started.text()
    params = await browse_to_callback(started.headers["Location"])
    return await web.get("/auth/sso/callback/", params=params, allow_redirects=False)
