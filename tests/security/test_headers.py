"""Security headers (issue 10, point 7): pages, API answers, static files and error pages carry
a Content-Security-Policy without inline scripts, refuse to be framed, are not sniffed, send no
Referer to other sites, name no server version, and ask for HTTPS when BASE_URL is https."""

from __future__ import annotations

import pytest

from api.app import create_app

PATHS = ["/auth/login/", "/", "/api/0/users/me/", "/static/app.css", "/no/such/page/", "/healthz"]


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (item.split() for item in policy.split(";") if item.strip())
    return {words[0]: words[1:] for words in parts}


@pytest.mark.parametrize("path", PATHS)
async def test_every_answer_carries_the_headers(client, path) -> None:
    response = await client.get(path)
    headers = response.headers
    csp = _directives(headers["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Server"] == "require2fa"
    assert "aiohttp" not in headers["Server"] and "Python" not in headers["Server"]
    # BASE_URL is http://testserver here.
    assert "Strict-Transport-Security" not in headers


async def test_an_accept_page_sends_no_referer_elsewhere(client) -> None:
    response = await client.get("/accept/1/not-a-token/")
    assert response.headers["Referrer-Policy"] == "same-origin"


async def test_https_base_url_adds_hsts(aiohttp_client, settings) -> None:
    client = await aiohttp_client(create_app(settings.replace(base_url="https://r2fa.example")))
    for path in ("/auth/login/", "/api/0/users/me/"):
        response = await client.get(path)
        assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
