"""Whatever a client sends, every endpoint answers with JSON and never with a 500."""

from __future__ import annotations

import asyncio
import re

import pytest

from api.routes import ROUTES
from tests.factories import owner_org_and_token

HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("not json", b"{not json"),
    ("a list", b"[1, 2, 3]"),
    ("a string", b'"hello"'),
    ("null", b"null"),
    ("latin-1", '{"name": "caf\xe9"}'.encode("latin-1")),
    (
        "wrong types",
        b'{"email": 5, "password": [], "name": {}, "slug": 7, "role": 1, '
        b'"teams": "x", "settings": "x", "require2FA": "yes", "otp": 123456, "phone": 5}',
    ),
    ("huge numbers", b'{"email": 1e999, "per_page": 99999999999999999999999}'),
    ("nul bytes", b'{"email": "a\\u0000@example.com", "name": "\\u0000", "slug": "a\\u0000"}'),
]
PATH_VALUES = {
    "org": ["acme", "no-such-org", "%00", "a" * 300],
    "member_id": ["1", "abc", "-1", "99999999999999999999999", "0"],
    "token": ["x", "%00"],
    "id": ["1", "abc", "99999999999999999999999"],
    "enforcement_id": ["1", "abc", "99999999999999999999999"],
    "webhook_id": ["1", "abc", "99999999999999999999999"],
    "delivery_id": ["1", "abc", "99999999999999999999999"],
}
SKIP = {"/metrics"}


def _paths(template: str) -> list[str]:
    paths = [template]
    for name, values in PATH_VALUES.items():
        if "{" + name + "}" in template:
            paths = [p.replace("{" + name + "}", v) for p in paths for v in values]
    assert not re.search(r"{\w+}", paths[0]), f"no test values for a parameter in {template}"
    return paths


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r.path not in SKIP], ids=lambda r: f"{r.method} {r.path}"
)
async def test_no_server_errors(client, pool, route) -> None:
    owner, _, headers = await owner_org_and_token(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend",)
    )
    for path in _paths(route.path):
        for what, body in HOSTILE_BODIES:
            for auth in (headers, {}):
                response = await client.request(
                    route.method,
                    path,
                    data=body,
                    headers={**auth, "Content-Type": "application/json"},
                    params={"query": "has2fa:maybe", "cursor": "zz", "per_page": "-1"},
                )
                assert response.status < 500, f"{route.method} {path} with {what}"
                if response.status >= 400:
                    payload = await response.json()
                    assert isinstance(payload.get("detail"), str), (path, what, payload)


async def test_malformed_requests_get_400_not_500(client, pool) -> None:
    owner, _, headers = await owner_org_and_token(pool, "acme", "owner@example.com", has2fa=True)
    url = "/api/0/organizations/acme/members/"
    deep = await client.post(
        url, data=b"[" * 100_000, headers={**headers, "Content-Type": "application/json"}
    )
    assert deep.status == 400
    charset = await client.post(
        url, data=b"{}", headers={**headers, "Content-Type": "application/json; charset=nope"}
    )
    assert charset.status == 400
    nul_query = await client.get(url, params={"query": "a\x00b"}, headers=headers)
    assert nul_query.status == 400
    for response in (deep, charset, nul_query):
        assert (await response.json())["detail"]


async def test_a_token_that_is_not_utf8_is_just_invalid(client, pool) -> None:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"GET /api/0/users/me/ HTTP/1.1\r\nHost: testserver\r\n"
        b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b'"detail"' in answer
