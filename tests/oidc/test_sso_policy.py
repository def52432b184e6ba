"""Blocked in place (`require2FAAction: block`) under single sign-on with `mfa: idp`: a blocked
member's sign-in through the identity provider with a second factor lets them in at once, in the
sign-in's own transaction, audited `member.unblocked`, with no link to follow."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from require2fa.settings import Settings
from tests.oidc.conftest import Provider, sso_sign_in
from tests.oidc.test_sso_wiring import ORG, acme, configure, run_to_the_end  # noqa: F401


async def test_a_blocked_member_is_let_in_by_a_sign_in_with_the_providers_mfa(
    web: TestClient,
    oidc_provider: Provider,
    acme,  # noqa: F811  (the fixture of test_sso_wiring.py)
    pool,
    sso_settings: Settings,
) -> None:
    headers = acme["headers"]
    await configure(web, oidc_provider, headers)
    # Bob links his account by a sign-in without a second factor.
    first = await sso_sign_in(web, oidc_provider, "bob-sub", "bob@acme.test", amr=["pwd"])
    assert first.status == 303, await first.text()
    turned = await web.put(
        ORG, json={"require2FA": True, "require2FAAction": "block"}, headers=headers
    )
    assert turned.status == 200, await turned.text()
    await run_to_the_end(pool, sso_settings, int((await turned.json())["enforcement"]["id"]))
    listed = await (await web.get(f"{ORG}members/?query=is:blocked", headers=headers)).json()
    assert "bob@acme.test" in {row["email"] for row in listed}
    refused = await web.get(ORG)  # Bob's session
    assert refused.status == 401 and (await refused.json())["code"] == "2fa-required"

    # He signs in again, the provider asserting a one-time code: in at once.
    again = await sso_sign_in(web, oidc_provider, "bob-sub", "bob@acme.test", amr=["pwd", "otp"])
    assert again.status == 303, await again.text()
    assert again.headers["Location"] == "/organizations/acme/"
    assert (await web.get(ORG)).status == 200
    async with pool.acquire() as conn:
        unblocked = await conn.fetch(
            "select data from audit_log where event = 'member.unblocked' order by id"
        )
        still = await conn.fetch(
            "select email from members where blocked_at is not null order by email"
        )
    assert [dict(r["data"]) for r in unblocked] == [{"email": "bob@acme.test", "reason": "2fa"}]
    assert [r["email"] for r in still] == ["alice@acme.test", "carol@acme.test"]
