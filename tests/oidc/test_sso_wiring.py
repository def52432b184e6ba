"""Single sign-on wired into the product, against the real OpenID Provider (conftest.py): the
configuration API, the sign-in through HTTP redirects (our pages, the provider's, back), the
account linking and its refusals, and the identity provider's MFA counted by the requirement
under `mfa: idp` (kept, removed, let in, lapsing)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from jobs.enforcement import coordinate_run, remove_batch_now
from require2fa import emails
from require2fa.settings import Settings
from tests.factories import add_member, create_org, create_user, token_for
from tests.oidc.conftest import (
    BASE_URL,
    CLIENT_SECRET,
    REDIRECT_URI,
    Provider,
    browse_to_callback,
    sso_sign_in,
)
from tests.softkey import SoftKey

ORG = "/api/0/organizations/acme/"
SSO = f"{ORG}sso/"
ME = "/api/0/users/me/"
PEOPLE = {
    # name: what their identity provider asserts at sign-in
    "alice": ["pwd", "otp"],
    "bob": ["pwd"],
    "carol": ["pwd", "hwk"],
}


async def add_key(pool, user_id: int) -> None:
    """A confirmed security key: the owner meets every level."""
    key = SoftKey()
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into authenticators (user_id, type, name, credential_id, public_key,
                                           sign_count, confirmed_at)
               values ($1, 'webauthn', 'key', $2, $3, 0, now())""",
            user_id,
            key.credential_id,
            key.cose_public_key(),
        )


@pytest.fixture
async def acme(pool) -> dict[str, Any]:
    """Acme, its owner (a security key, an API token) and three members without factors."""
    owner = await create_user(pool, "owner@acme.test")
    await add_key(pool, owner["id"])
    org = await create_org(pool, "acme", owner["id"])
    members = {}
    for name in PEOPLE:
        user = await create_user(pool, f"{name}@acme.test")
        members[name] = await add_member(pool, org["id"], user)
    return {"org": org, "headers": await token_for(pool, owner["id"]), "members": members}


async def configure(web: TestClient, provider: Provider, headers, mfa: str = "idp") -> Any:
    response = await web.put(
        SSO,
        json={
            "issuer": provider.issuer,
            "clientId": "require2fa",
            "clientSecret": CLIENT_SECRET,
            "mfa": mfa,
        },
        headers=headers,
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def sign_in_everyone(web: TestClient, provider: Provider) -> None:
    for name, amr in PEOPLE.items():
        response = await sso_sign_in(web, provider, f"{name}-sub", f"{name}@acme.test", amr=amr)
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == "/organizations/acme/"


async def run_to_the_end(pool, settings: Settings, run_id: int) -> None:
    sent: list[tuple[int, int]] = []
    await coordinate_run(pool, run_id, send=lambda *a: sent.append(a))
    for _, batch_no in sent:
        await remove_batch_now(pool, settings, run_id, batch_no)


async def test_owners_save_read_and_delete_the_configuration(
    web: TestClient, oidc_provider: Provider, acme, pool
) -> None:
    headers = acme["headers"]
    saved = await configure(web, oidc_provider, headers)

    assert saved["issuer"] == oidc_provider.issuer
    assert saved["redirectUri"] == REDIRECT_URI
    assert saved["mfa"] == "idp" and saved["hasClientSecret"] is True
    read = await (await web.get(SSO, headers=headers)).json()
    assert CLIENT_SECRET not in str(read) and read["clientId"] == "require2fa"
    assert (await (await web.get(ORG, headers=headers)).json())["ssoEnabled"] is True
    async with pool.acquire() as conn:
        stored = await conn.fetchval("select client_secret_encrypted from sso_configs")
    assert CLIENT_SECRET.encode() not in bytes(stored)

    # Saved again without the secret: the stored one stays.
    again = await web.put(
        SSO, json={"issuer": oidc_provider.issuer, "clientId": "require2fa"}, headers=headers
    )
    assert again.status == 200, await again.text()
    assert (await again.json())["mfa"] == "local"

    unreachable = await web.put(
        SSO,
        json={"issuer": "http://127.0.0.1:9", "clientId": "x", "clientSecret": "y"},
        headers=headers,
    )
    assert unreachable.status == 400
    assert "did not answer" in (await unreachable.json())["errors"]["issuer"][0]

    assert (await web.delete(SSO, headers=headers)).status == 204
    assert (await web.get(SSO, headers=headers)).status == 404
    assert (await (await web.get(ORG, headers=headers)).json())["ssoEnabled"] is False
    log = await (await web.get(f"{ORG}audit-logs/?event=org.sso-edit", headers=headers)).json()
    assert [row["data"].get("deleted", False) for row in log["rows"]] == [True, False, False]


async def test_members_can_require_2fa_with_a_configuration(
    web: TestClient, oidc_provider: Provider, acme
) -> None:
    headers = acme["headers"]
    await configure(web, oidc_provider, headers, mfa="local")

    response = await web.put(ORG, json={"require2FA": True}, headers=headers)

    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["require2FA"] is True and body["ssoEnabled"] is True


@pytest.mark.parametrize(
    ("level", "removed"),
    [("any", {"bob"}), ("phishing-resistant", {"alice", "bob"})],
)
async def test_the_identity_providers_mfa_keeps_members_by_level(
    web: TestClient,
    oidc_provider: Provider,
    acme,
    pool,
    sso_settings: Settings,
    level: str,
    removed: set[str],
) -> None:
    headers = acme["headers"]
    await configure(web, oidc_provider, headers)
    await sign_in_everyone(web, oidc_provider)

    listed = await (await web.get(f"{ORG}members/", headers=headers)).json()
    sso = {row["email"].split("@")[0]: row["sso"] for row in listed}
    assert sso["owner"] is None
    assert sso["alice"]["linked"] and sso["alice"]["amr"] == ["pwd", "otp"]
    assert sso["alice"]["meetsRequirement"] and not sso["bob"]["meetsRequirement"]
    await web.put(ORG, json={"require2FALevel": level}, headers=headers)
    preview = await (await web.get(f"{ORG}2fa-compliance/", headers=headers)).json()
    assert preview["count"] == len(removed)
    assert {row["email"].split("@")[0] for row in preview["members"]} == removed

    turned = await web.put(ORG, json={"require2FA": True}, headers=headers)
    assert turned.status == 200, await turned.text()
    await run_to_the_end(pool, sso_settings, int((await turned.json())["enforcement"]["id"]))

    after = await (await web.get(f"{ORG}members/", headers=headers)).json()
    pending = {row["email"].split("@")[0] for row in after if row["pending"]}
    assert pending == removed
    async with pool.acquire() as conn:
        context = await conn.fetchval(
            "select context from email_outbox where to_address = 'bob@acme.test'"
        )
    text = emails.render("removed_for_2fa", context, sso_settings).text
    assert "sign in through your organization's identity provider" in text
    assert f"{BASE_URL}/auth/sso/acme/" in text


async def test_the_ongoing_check_lets_in_an_assertion_until_it_lapses(
    web: TestClient, oidc_provider: Provider, acme, pool, sso_settings: Settings
) -> None:
    headers = acme["headers"]
    await configure(web, oidc_provider, headers)
    await sign_in_everyone(web, oidc_provider)
    turned = await web.put(ORG, json={"require2FA": True}, headers=headers)
    assert turned.status == 200, await turned.text()

    # Carol, signed in last in `web`, was kept by her key's assertion.
    assert (await web.get(ORG)).status == 200
    async with pool.acquire() as conn:
        await conn.execute("update sso_identities set last_sign_in_at = now() - interval '31 days'")
    blocked = await web.get(ORG)
    assert blocked.status == 401
    assert (await blocked.json())["code"] == "2fa-required"

    # Lapsed: the next run removes her like any member without a factor.
    await run_to_the_end(pool, sso_settings, int((await turned.json())["enforcement"]["id"]))
    preview = await (await web.get(f"{ORG}members/?query=is:pending", headers=headers)).json()
    assert {row["email"] for row in preview} == {f"{name}@acme.test" for name in PEOPLE}


async def test_the_first_sign_in_links_the_member_once(
    web: TestClient, oidc_provider: Provider, acme
) -> None:
    headers = acme["headers"]
    await configure(web, oidc_provider, headers)

    first = await sso_sign_in(web, oidc_provider, "alice-sub", "Alice@acme.test", amr=["otp"])
    assert first.status == 303, await first.text()
    me = await (await web.get(ME)).json()
    second = await sso_sign_in(web, oidc_provider, "alice-sub", "changed@elsewhere.test")

    assert me["email"] == "alice@acme.test"
    assert second.status == 303  # the same (iss, sub): the same user, whatever the email now
    assert (await (await web.get(ME)).json())["id"] == me["id"]
    log = await (await web.get(f"{ORG}audit-logs/?event=member.sso-link", headers=headers)).json()
    assert [row["data"]["email"] for row in log["rows"]] == ["alice@acme.test"]
    assert log["rows"][0]["targetMember"] == str(acme["members"]["alice"])


async def test_a_callback_with_another_state_is_refused(
    web: TestClient, oidc_provider: Provider, acme
) -> None:
    await configure(web, oidc_provider, acme["headers"])
    await oidc_provider.next_login("alice-sub", "alice@acme.test", amr=["otp"])
    started = await web.get("/auth/sso/acme/", allow_redirects=False)
    params = await browse_to_callback(started.headers["Location"])

    response = await web.get("/auth/sso/callback/", params=params | {"state": "forged"})

    assert response.status == 400
    assert "does not belong to this browser session" in await response.text()
    assert (await web.get(ME)).status == 401


async def test_a_replayed_callback_is_refused(
    web: TestClient, oidc_provider: Provider, acme
) -> None:
    await configure(web, oidc_provider, acme["headers"])
    await oidc_provider.next_login("alice-sub", "alice@acme.test", amr=["otp"])
    started = await web.get("/auth/sso/acme/", allow_redirects=False)
    params = await browse_to_callback(started.headers["Location"])
    first = await web.get("/auth/sso/callback/", params=params, allow_redirects=False)
    assert first.status == 303

    replayed = await web.get("/auth/sso/callback/", params=params)

    assert replayed.status == 400
    assert "start the sign-in again" in await replayed.text()


async def test_a_callback_in_another_browser_is_refused(
    web: TestClient, aiohttp_client, sso_settings: Settings, oidc_provider: Provider, acme
) -> None:
    await configure(web, oidc_provider, acme["headers"])
    await oidc_provider.next_login("alice-sub", "alice@acme.test", amr=["otp"])
    started = await web.get("/auth/sso/acme/", allow_redirects=False)
    params = await browse_to_callback(started.headers["Location"])
    other = await aiohttp_client(create_app(sso_settings))

    response = await other.get("/auth/sso/callback/", params=params)

    assert response.status == 400
    assert (await other.get(ME)).status == 401


async def test_an_unverified_email_links_nobody(
    web: TestClient, oidc_provider: Provider, acme, pool
) -> None:
    await configure(web, oidc_provider, acme["headers"])

    response = await sso_sign_in(
        web, oidc_provider, "mallory", "alice@acme.test", email_verified=False
    )

    assert response.status == 403
    assert "did not verify your email alice@acme.test" in await response.text()
    assert (await web.get(ME)).status == 401
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from sso_identities") == 0


async def test_an_unknown_email_gets_a_page_saying_so(
    web: TestClient, oidc_provider: Provider, acme
) -> None:
    await configure(web, oidc_provider, acme["headers"])

    response = await sso_sign_in(web, oidc_provider, "stranger", "stranger@else.test")

    assert response.status == 403
    assert "No member of Acme has the email stranger@else.test" in await response.text()
    assert (await web.get(ME)).status == 401


async def test_an_organization_without_a_provider_has_no_sso_sign_in(web: TestClient) -> None:
    response = await web.get("/auth/sso/nobody/", allow_redirects=False)

    assert response.status == 404
    assert "does not sign in through an identity provider" in await response.text()


async def test_a_user_with_a_factor_still_owes_it_without_the_providers_mfa(
    web: TestClient, oidc_provider: Provider, acme, pool
) -> None:
    await configure(web, oidc_provider, acme["headers"], mfa="local")

    response = await sso_sign_in(web, oidc_provider, "owner-sub", "owner@acme.test", amr=["hwk"])

    assert response.status == 303
    assert response.headers["Location"].startswith("/auth/login/?next=")
    refused = await web.get(ME)
    assert refused.status == 401
    assert (await refused.json())["2faRequired"] is True
