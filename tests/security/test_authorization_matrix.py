"""The authorization matrix (issue 10, point 11): every organization operation, asked by every
kind of caller, with the requirement off and on, against the status each should get (`MATRIX`).

`MATRIX` is the table to check against the contract: one row per operation, the status each
member role of organization A gets. The callers who are not (or not yet, or no longer) members
get the same answer from every operation, `OUTSIDERS`:

- anonymous and half signed in (password accepted, second factor pending; a cookie session):
  401, before anything else;
- the owner of organization B, the pending invitee of A (signed in, not joined) and the member
  of A removed for 2FA (signed in, pending): 404, A is not visible to them;
- `no2fa`, an active member of A without a second factor: the member's answer while the
  requirement is off, 401 `2fa-required` while it is on.

The member roles call with API tokens (a token counts as a recent re-authentication, §9), so
their cells say what the role may do. `owner-cookie` is the same owner in a cookie session whose
last password or code check is older than 10 minutes: the operations that need a recent
re-authentication (reset-2fa, exemptions, creating a webhook, turning the requirement off)
answer it 401 `sudo-required`, everything else as for the owner.

Rows whose path holds an id of organization B (`b_*`) ask for it through A's URL: 404 for
whoever may use the operation. Where the role is checked before the id is looked up (the
owners' and managers' tools), the roles without it get 403 whatever the id; member PUT/DELETE
look the member up first (the answer depends on whose row it is), so there it is 404 for all.

One world is seeded per requirement state; operations that succeed and change something work on
a victim made for that request (`fresh`) or are undone (`undo`), and a member leaving is the last
operation of each caller.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from api.auth import SESSION_COOKIE
from db import sso as sso_rows
from require2fa import sso
from tests.factories import (
    add_member,
    create_org,
    create_user,
    enroll_totp,
    remove_for_2fa,
    sign_in,
    sign_in_with_totp,
    token_for,
)
from tests.security.helpers import age_reauthentication, cookie_of

ROLES = ("member", "billing", "admin", "manager", "owner", "owner-cookie")
CALLERS = (
    "anonymous",
    "half-signed-in",
    *ROLES,
    "other-owner",
    "invitee",
    "removed",
    "no2fa",
)
OUTSIDERS = {"anonymous": 401, "half-signed-in": 401, "other-owner": 404, "invitee": 404}
OUTSIDERS["removed"] = 404
SUDO = 401  # `sudo-required`, in the owner-cookie column

# Who gets what; the role columns in ROLES order (OUTSIDERS and no2fa as the docstring says).
#   op name: (member, billing, admin, manager, owner, owner-cookie)
MATRIX: dict[str, tuple[int, int, int, int, int, int]] = {
    # Organization
    "GET org": (200, 200, 200, 200, 200, 200),
    "PUT org name": (403, 403, 403, 200, 200, 200),
    "PUT org require2FA on (while off)": (403, 403, 403, 403, 200, 200),
    "PUT org require2FA off (while on)": (403, 403, 403, 403, 200, SUDO),
    "PUT org require2FALevel secure": (403, 403, 403, 403, 200, 200),
    "PUT org ssoEnabled on (while off)": (403, 403, 403, 403, 200, 200),
    "PUT org ssoEnabled on (while on: turns it off)": (403, 403, 403, 403, 200, SUDO),
    # Enforcement and the audit log
    "GET 2fa-compliance": (403, 403, 403, 200, 200, 200),
    "GET 2fa-compliance csv": (403, 403, 403, 200, 200, 200),
    "GET 2fa-enforcements": (403, 403, 403, 200, 200, 200),
    "GET 2fa-enforcements/{run}": (403, 403, 403, 200, 200, 200),
    "GET 2fa-enforcements/{b_run}": (403, 403, 403, 404, 404, 404),
    "POST 2fa-reminders": (403, 403, 403, 202, 202, 202),
    "GET audit-logs": (403, 403, 403, 200, 200, 200),
    # Teams
    "GET teams": (200, 200, 200, 200, 200, 200),
    "POST teams": (403, 403, 201, 201, 201, 201),
    # Members
    "GET members": (200, 200, 200, 200, 200, 200),
    "POST members (invite)": (403, 403, 403, 201, 201, 201),
    "GET members/{target}": (200, 200, 200, 200, 200, 200),
    "GET members/{b_member}": (404, 404, 404, 404, 404, 404),
    "PUT members/{target} role": (403, 403, 403, 200, 200, 200),
    "PUT members/{b_member} role": (404, 404, 404, 404, 404, 404),
    "PUT members/{owner} role (an owner)": (403, 403, 403, 403, 200, 200),
    "PUT members/{target} role owner (grant)": (403, 403, 403, 403, 200, 200),
    "PUT members/{target} teams": (403, 403, 403, 200, 200, 200),
    "PUT members/{own} settings": (200, 200, 200, 200, 200, 200),
    "PUT members/{owner} nothing": (403, 403, 403, 200, 200, 200),
    "PUT members/{target} settings": (403, 403, 403, 403, 403, 403),
    "PUT members/{b_member} settings": (404, 404, 404, 404, 404, 404),
    "PUT members/{invitee} reinvite": (403, 403, 403, 200, 200, 200),
    "PUT members/{removed} reinvite": (403, 403, 403, 200, 200, 200),
    "PUT members/{b_pending} reinvite": (403, 403, 403, 404, 404, 404),
    "PUT members/{target} exempt2FA": (403, 403, 403, 403, 200, SUDO),
    "PUT members/{b_member} exempt2FA": (403, 403, 403, 403, 404, SUDO),
    "PUT members/{target} exempt2FA null (lift)": (403, 403, 403, 403, 200, SUDO),
    "POST members/{victim}/reset-2fa": (403, 403, 403, 403, 200, SUDO),
    "POST members/{b_member}/reset-2fa": (403, 403, 403, 403, 404, SUDO),
    "DELETE members/{victim}": (403, 403, 403, 204, 204, 204),
    "DELETE members/{owner} (an owner)": (403, 403, 403, 403, 409, 409),
    "DELETE members/{b_member}": (404, 404, 404, 404, 404, 404),
    # Webhooks
    "GET webhooks": (403, 403, 403, 403, 200, 200),
    "POST webhooks": (403, 403, 403, 403, 201, SUDO),
    "GET webhooks/{hook}": (403, 403, 403, 403, 200, 200),
    "GET webhooks/{hook}/deliveries": (403, 403, 403, 403, 200, 200),
    "GET webhooks/{b_hook}": (403, 403, 403, 403, 404, 404),
    "DELETE webhooks/{victim_hook}": (403, 403, 403, 403, 204, 204),
    "DELETE webhooks/{b_hook}": (403, 403, 403, 403, 404, 404),
    "PUT webhooks/{hook} events": (403, 403, 403, 403, 200, 200),
    "PUT webhooks/{hook} url": (403, 403, 403, 403, 200, SUDO),
    "PUT webhooks/{b_hook}": (403, 403, 403, 403, 404, 404),
    "POST webhooks/{hook}/ping": (403, 403, 403, 403, 202, 202),
    "POST webhooks/{b_hook}/ping": (403, 403, 403, 403, 404, 404),
    "POST webhooks/{hook}/deliveries/{delivery}/redeliver": (403, 403, 403, 403, 202, 202),
    "POST webhooks/{hook}/deliveries/{b_delivery}/redeliver": (403, 403, 403, 403, 404, 404),
    "POST webhooks/{hook}/rotate-secret": (403, 403, 403, 403, 200, SUDO),
    "POST webhooks/{b_hook}/rotate-secret": (403, 403, 403, 403, 404, SUDO),
    # Single sign-on (a provider's discovery document served by `issuer`)
    "GET sso": (403, 403, 403, 200, 200, 200),
    "PUT sso": (403, 403, 403, 403, 200, SUDO),
    "DELETE sso": (403, 403, 403, 403, 204, SUDO),
    # Leaving: anyone may leave, but not the last owner (last, it ends the caller's membership)
    "DELETE members/{own} (leave)": (204, 204, 204, 204, 409, 409),
}

ORG = "/api/0/organizations/alpha"
_counter = itertools.count()
ISSUER: list[str] = []  # the identity provider of `issuer`, for the body of "PUT sso"


def _future(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@dataclass
class World:
    """Organization A (`alpha`) with a caller per column, and B (`beta`) with ids to ask for
    through A's URL."""

    pool: asyncpg.Pool
    client: Any
    settings: Any
    org_id: int = 0
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    own: dict[str, int] = field(default_factory=dict)  # caller -> their member id in A
    ids: dict[str, int] = field(default_factory=dict)  # target, invitee, b_member, run, ...


async def _seed(world: World, require_2fa: bool) -> None:
    pool, client = world.pool, world.client
    owner = await create_user(pool, "owner@a.example")
    owner_token = await token_for(pool, owner["id"])
    alpha = await create_org(pool, "alpha", owner["id"], teams=("ops",))
    world.org_id = alpha["id"]
    secret = await enroll_totp(client, headers=owner_token)
    async with pool.acquire() as conn:
        world.own["owner"] = world.own["owner-cookie"] = await conn.fetchval(
            "select id from members where user_id = $1", owner["id"]
        )
    world.headers["owner"] = owner_token
    world.headers["anonymous"] = {}

    # The owner in two cookie sessions: half signed in, and signed in long ago.
    response = await sign_in(client, owner["email"])
    assert response.status == 401, await response.text()
    world.headers["half-signed-in"] = {"Cookie": f"{SESSION_COOKIE}={cookie_of(client)}"}
    client.session.cookie_jar.clear()
    response = await sign_in_with_totp(client, owner["email"], secret)
    assert response.status == 200, await response.text()
    world.headers["owner-cookie"] = {"Cookie": f"{SESSION_COOKIE}={cookie_of(client)}"}
    client.session.cookie_jar.clear()
    await age_reauthentication(pool)

    for role in ("member", "billing", "admin", "manager"):
        user = await create_user(pool, f"{role}@a.example", has2fa=True)
        world.own[role] = await add_member(pool, alpha["id"], user, role=role)
        world.headers[role] = await token_for(pool, user["id"])
    no2fa = await create_user(pool, "no2fa@a.example")
    world.own["no2fa"] = await add_member(pool, alpha["id"], no2fa)
    world.headers["no2fa"] = await token_for(pool, no2fa["id"])
    target = await create_user(pool, "target@a.example", has2fa=True)
    world.ids["target"] = await add_member(pool, alpha["id"], target)

    invitee = await create_user(pool, "invitee@a.example", has2fa=True)
    world.headers["invitee"] = await token_for(pool, invitee["id"])
    response = await client.post(
        f"{ORG}/members/", json={"email": invitee["email"]}, headers=owner_token
    )
    assert response.status == 201, await response.text()
    world.ids["invitee"] = (await response.json())["id"]

    removed = await create_user(pool, "removed@a.example")
    removed_id = await add_member(pool, alpha["id"], removed)
    await remove_for_2fa(pool, removed_id, world.settings)
    world.ids["removed"] = removed_id
    world.headers["removed"] = await token_for(pool, removed["id"])

    other = await create_user(pool, "owner@b.example", has2fa=True)
    other_token = await token_for(pool, other["id"])
    world.headers["other-owner"] = other_token
    beta = await create_org(pool, "beta", other["id"])
    b_user = await create_user(pool, "member@b.example", has2fa=True)
    world.ids["b_member"] = await add_member(pool, beta["id"], b_user)
    response = await client.post(
        "/api/0/organizations/beta/members/", json={"email": "new@b.example"}, headers=other_token
    )
    assert response.status == 201, await response.text()
    world.ids["b_pending"] = (await response.json())["id"]
    world.ids["hook"] = await _webhook(world, "alpha", owner_token)
    world.ids["b_hook"] = await _webhook(world, "beta", other_token)
    async with pool.acquire() as conn:  # each webhook hears of its own creation
        for name in ("hook", "b_hook"):
            world.ids[name.replace("hook", "delivery")] = await conn.fetchval(
                "select min(id) from webhook_deliveries where webhook_id = $1", world.ids[name]
            )
    await _sso_config(world)

    async with pool.acquire() as conn:
        world.ids["run"], world.ids["b_run"] = [
            await conn.fetchval(
                """insert into enforcement_runs (organization_id, status, finished_at)
                   values ($1, 'completed', now()) returning id""",
                org_id,
            )
            for org_id in (alpha["id"], beta["id"])
        ]
        if require_2fa:
            await conn.execute(
                "update organizations set require_2fa = true where id = $1", alpha["id"]
            )


async def _webhook(world: World, slug: str, headers: dict[str, str]) -> int:
    response = await world.client.post(
        f"/api/0/organizations/{slug}/webhooks/",
        json={"url": "https://hooks.example.com/r2fa", "events": ["*"]},
        headers=headers,
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def _sso_config(world: World) -> None:
    """A's identity provider, as saving it writes it (the secret encrypted)."""
    async with world.pool.acquire() as conn:
        await sso_rows.save_config(
            conn,
            organization_id=world.org_id,
            issuer=ISSUER[0],
            client_id="app",
            client_secret_encrypted=sso.encrypt_client_secret(world.settings.secret_key, "s"),
            mfa="local",
            metadata=await sso.discover(ISSUER[0], development=True),
        )


@pytest.fixture
async def issuer(aiohttp_server) -> AsyncIterator[str]:
    """An identity provider's discovery document, enough to save a configuration."""

    async def discovery(request: web.Request) -> web.Response:
        base = str(request.url.origin())
        return web.json_response(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/auth",
                "token_endpoint": f"{base}/token",
                "jwks_uri": f"{base}/jwks",
            }
        )

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    server = await aiohttp_server(app)
    ISSUER[:] = [str(server.make_url("")).rstrip("/")]
    yield ISSUER[0]
    ISSUER.clear()


# --- What each operation needs: a fresh victim, or undoing a change ---------------------------


async def _victim(world: World) -> dict[str, int]:
    """A member of A alone, with a second factor, to remove or reset."""
    user = await create_user(world.pool, f"victim{next(_counter)}@a.example", has2fa=True)
    return {"victim": await add_member(world.pool, world.org_id, user)}


async def _victim_hook(world: World) -> dict[str, int]:
    return {"victim_hook": await _webhook(world, "alpha", world.headers["owner"])}


async def _restore_requirement(world: World, required: bool) -> None:
    async with world.pool.acquire() as conn:
        await conn.execute(
            """update organizations set require_2fa = $2, require_2fa_level = 'any',
                      sso_enabled = false
               where id = $1""",
            world.org_id,
            required,
        )
        await conn.execute(
            """update enforcement_runs set status = 'cancelled', finished_at = now()
               where organization_id = $1 and status in ('queued', 'running')""",
            world.org_id,
        )


Fresh = Callable[[World], Awaitable[dict[str, int]]]
Undo = Callable[[World], Awaitable[None]]


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # under A's URL; {names} from World.ids, the caller's own member id, `fresh`
    body: Any = None
    fresh: Fresh | None = None
    undo: Undo | None = None
    states: tuple[bool, ...] = (False, True)  # requirement off, on


async def _undo_on(world: World) -> None:
    await _restore_requirement(world, False)


async def _undo_off(world: World) -> None:
    await _restore_requirement(world, True)


async def _undo_sso_while_off(world: World) -> None:
    await _restore_requirement(world, False)


async def _undo_sso_while_on(world: World) -> None:
    await _restore_requirement(world, True)


async def _undo_grant(world: World) -> None:
    async with world.pool.acquire() as conn:
        await conn.execute("update members set role = 'member' where id = $1", world.ids["target"])


async def _undo_level(world: World) -> None:
    async with world.pool.acquire() as conn:
        await conn.execute(
            "update organizations set require_2fa_level = 'any' where id = $1", world.org_id
        )


EXEMPT = {"exempt2FA": {"reason": "CI bot", "until": _future(30)}}
OPS: dict[str, Op] = {
    "GET org": Op("GET", "/"),
    "PUT org name": Op("PUT", "/", {"name": "Alpha"}),
    "PUT org require2FA on (while off)": Op(
        "PUT", "/", {"require2FA": True}, undo=_undo_on, states=(False,)
    ),
    "PUT org require2FA off (while on)": Op(
        "PUT", "/", {"require2FA": False}, undo=_undo_off, states=(True,)
    ),
    "PUT org require2FALevel secure": Op(
        "PUT", "/", {"require2FALevel": "secure"}, undo=_undo_level
    ),
    "PUT org ssoEnabled on (while off)": Op(
        "PUT", "/", {"ssoEnabled": True}, undo=_undo_sso_while_off, states=(False,)
    ),
    "PUT org ssoEnabled on (while on: turns it off)": Op(
        "PUT", "/", {"ssoEnabled": True}, undo=_undo_sso_while_on, states=(True,)
    ),
    "GET 2fa-compliance": Op("GET", "/2fa-compliance/"),
    "GET 2fa-compliance csv": Op("GET", "/2fa-compliance/?format=csv"),
    "GET 2fa-enforcements": Op("GET", "/2fa-enforcements/"),
    "GET 2fa-enforcements/{run}": Op("GET", "/2fa-enforcements/{run}/"),
    "GET 2fa-enforcements/{b_run}": Op("GET", "/2fa-enforcements/{b_run}/"),
    "POST 2fa-reminders": Op("POST", "/2fa-reminders/", {}),
    "GET audit-logs": Op("GET", "/audit-logs/?event=member.pending"),
    "GET teams": Op("GET", "/teams/"),
    "POST teams": Op("POST", "/teams/", lambda: {"name": f"Team {next(_counter)}"}),
    "GET members": Op("GET", "/members/?query=has2fa:false"),
    "POST members (invite)": Op(
        "POST", "/members/", lambda: {"email": f"new{next(_counter)}@a.example", "role": "member"}
    ),
    "GET members/{target}": Op("GET", "/members/{target}/"),
    "GET members/{b_member}": Op("GET", "/members/{b_member}/"),
    "PUT members/{target} role": Op("PUT", "/members/{target}/", {"role": "member"}),
    "PUT members/{b_member} role": Op("PUT", "/members/{b_member}/", {"role": "member"}),
    "PUT members/{owner} role (an owner)": Op("PUT", "/members/{owner}/", {"role": "owner"}),
    "PUT members/{target} role owner (grant)": Op(
        "PUT", "/members/{target}/", {"role": "owner"}, undo=_undo_grant
    ),
    "PUT members/{target} teams": Op("PUT", "/members/{target}/", {"teams": ["ops"]}),
    "PUT members/{own} settings": Op("PUT", "/members/{own}/", {"settings": {"weekly": False}}),
    "PUT members/{owner} nothing": Op("PUT", "/members/{owner}/", {}),
    "PUT members/{target} settings": Op(
        "PUT", "/members/{target}/", {"settings": {"weekly": False}}
    ),
    "PUT members/{b_member} settings": Op(
        "PUT", "/members/{b_member}/", {"settings": {"weekly": False}}
    ),
    "PUT members/{invitee} reinvite": Op("PUT", "/members/{invitee}/", {"reinvite": True}),
    "PUT members/{removed} reinvite": Op("PUT", "/members/{removed}/", {"reinvite": True}),
    "PUT members/{b_pending} reinvite": Op("PUT", "/members/{b_pending}/", {"reinvite": True}),
    "PUT members/{target} exempt2FA": Op("PUT", "/members/{target}/", EXEMPT),
    "PUT members/{b_member} exempt2FA": Op("PUT", "/members/{b_member}/", EXEMPT),
    "PUT members/{target} exempt2FA null (lift)": Op(
        "PUT", "/members/{target}/", {"exempt2FA": None}
    ),
    "POST members/{victim}/reset-2fa": Op("POST", "/members/{victim}/reset-2fa/", {}, _victim),
    "POST members/{b_member}/reset-2fa": Op("POST", "/members/{b_member}/reset-2fa/", {}),
    "DELETE members/{victim}": Op("DELETE", "/members/{victim}/", fresh=_victim),
    "DELETE members/{owner} (an owner)": Op("DELETE", "/members/{owner}/"),
    "DELETE members/{b_member}": Op("DELETE", "/members/{b_member}/"),
    "GET webhooks": Op("GET", "/webhooks/"),
    "POST webhooks": Op(
        "POST", "/webhooks/", {"url": "https://hooks.example.com/new", "events": ["*"]}
    ),
    "GET webhooks/{hook}": Op("GET", "/webhooks/{hook}/"),
    "GET webhooks/{hook}/deliveries": Op("GET", "/webhooks/{hook}/deliveries/"),
    "GET webhooks/{b_hook}": Op("GET", "/webhooks/{b_hook}/"),
    "DELETE webhooks/{victim_hook}": Op("DELETE", "/webhooks/{victim_hook}/", fresh=_victim_hook),
    "DELETE webhooks/{b_hook}": Op("DELETE", "/webhooks/{b_hook}/"),
    "PUT webhooks/{hook} events": Op("PUT", "/webhooks/{hook}/", {"events": ["*"]}),
    "PUT webhooks/{hook} url": Op(
        "PUT", "/webhooks/{hook}/", {"url": "https://hooks.example.com/r2fa"}
    ),
    "PUT webhooks/{b_hook}": Op("PUT", "/webhooks/{b_hook}/", {"events": ["*"]}),
    "POST webhooks/{hook}/ping": Op("POST", "/webhooks/{hook}/ping/", {}),
    "POST webhooks/{b_hook}/ping": Op("POST", "/webhooks/{b_hook}/ping/", {}),
    "POST webhooks/{hook}/deliveries/{delivery}/redeliver": Op(
        "POST", "/webhooks/{hook}/deliveries/{delivery}/redeliver/", {}
    ),
    "POST webhooks/{hook}/deliveries/{b_delivery}/redeliver": Op(
        "POST", "/webhooks/{hook}/deliveries/{b_delivery}/redeliver/", {}
    ),
    "POST webhooks/{hook}/rotate-secret": Op("POST", "/webhooks/{hook}/rotate-secret/", {}),
    "POST webhooks/{b_hook}/rotate-secret": Op("POST", "/webhooks/{b_hook}/rotate-secret/", {}),
    "GET sso": Op("GET", "/sso/"),
    "PUT sso": Op(
        "PUT", "/sso/", lambda: {"issuer": ISSUER[0], "clientId": "app", "clientSecret": "s"}
    ),
    "DELETE sso": Op("DELETE", "/sso/", undo=lambda world: _sso_config(world)),
    "DELETE members/{own} (leave)": Op("DELETE", "/members/{own}/"),
}


def expected(op: str, caller: str, required: bool) -> int:
    if caller in OUTSIDERS:
        return OUTSIDERS[caller]
    if caller == "no2fa":
        return 401 if required else MATRIX[op][0]
    return MATRIX[op][ROLES.index(caller)]


def test_the_table_names_every_operation_once() -> None:
    assert list(MATRIX) == list(OPS)
    assert len(set(CALLERS)) == len(CALLERS) == len(OUTSIDERS) + len(ROLES) + 1


@pytest.mark.parametrize("required", [False, True], ids=["requirement-off", "requirement-on"])
async def test_authorization_matrix(client, pool, settings, issuer, required: bool) -> None:
    world = World(pool=pool, client=client, settings=settings)
    await _seed(world, required)
    wrong: list[str] = []
    cells = 0
    # No cookie jar: each caller's cookie (if any) is in its headers, and answers set none.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for caller in CALLERS:
            for name, op in OPS.items():
                if required not in op.states:
                    continue
                ids = dict(world.ids, own=world.own.get(caller, world.ids["target"]))
                ids["owner"] = world.own["owner"]
                if op.fresh is not None:
                    ids.update(await op.fresh(world))
                body = op.body() if callable(op.body) else op.body
                url = client.make_url(ORG + op.path.format(**ids))
                async with http.request(
                    op.method, url, json=body, headers=world.headers[caller]
                ) as response:
                    status = response.status
                    text = await response.text()
                if op.undo is not None and status < 300:
                    await op.undo(world)
                cells += 1
                want = expected(name, caller, required)
                if status != want:
                    wrong.append(f"{name} as {caller}: {status} (expected {want}) {text[:160]}")
                elif status == 401 and caller == "owner-cookie":
                    assert '"sudo-required"' in text, f"{name}: {text}"
                elif status == 401 and caller == "no2fa":
                    assert '"2fa-required"' in text, f"{name}: {text}"
    assert not wrong, f"{len(wrong)} of {cells} cells differ:\n" + "\n".join(wrong)
