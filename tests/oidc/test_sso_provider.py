"""The relying party (require2fa.sso) against a real OpenID Provider (conftest.py): discovery,
the code flow with PKCE, and each check of the ID token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from require2fa import sso
from require2fa.errors import Invalid
from tests.oidc.conftest import CLIENT_SECRET, REDIRECT_URI, Provider, browse_to_callback


async def config_for(provider: Provider, client_id: str = "require2fa") -> sso.Config:
    metadata = await sso.discover(provider.issuer, development=True)
    return sso.Config(provider.issuer, client_id, CLIENT_SECRET, metadata, mfa="idp")


async def sign_in(
    provider: Provider, config: sso.Config, **login: Any
) -> tuple[sso.AuthorizationRequest, dict[str, str]]:
    """A person signs in at the provider as `login` says; the request and the callback's query."""
    await provider.next_login(**login)
    request = sso.authorization_request(config, REDIRECT_URI)
    return request, await browse_to_callback(request.url)


async def finish(
    config: sso.Config, request: sso.AuthorizationRequest, params: dict[str, str], **kw: Any
) -> sso.Claims:
    return await sso.finish(
        config, params, request.state, request.nonce, request.code_verifier, REDIRECT_URI, **kw
    )


# --- Discovery ----------------------------------------------------------------------------


async def test_discovery_reads_the_provider_metadata(oidc_provider: Provider) -> None:
    metadata = await sso.discover(oidc_provider.issuer + "/", development=True)

    assert metadata["issuer"] == oidc_provider.issuer
    assert metadata["token_endpoint"].startswith(oidc_provider.issuer)
    assert "S256" in metadata["code_challenge_methods_supported"]


async def test_discovery_needs_https_outside_development(oidc_provider: Provider) -> None:
    with pytest.raises(Invalid) as refused:
        await sso.discover(oidc_provider.issuer, development=False)

    assert refused.value.code == "sso-issuer"
    assert "https://" in refused.value.detail


async def test_discovery_of_an_unreachable_issuer_is_refused() -> None:
    with pytest.raises(Invalid) as refused:
        await sso.discover("http://127.0.0.1:9", development=True)

    assert refused.value.code == "sso-unreachable"
    assert "did not answer" in refused.value.detail


async def test_discovery_of_a_site_that_is_not_openid_is_refused(oidc_provider: Provider) -> None:
    with pytest.raises(Invalid) as refused:
        await sso.discover(oidc_provider.issuer + "/not-an-issuer", development=True)

    assert refused.value.code == "sso-not-openid"
    assert "404" in refused.value.detail


async def test_discovery_refuses_a_provider_that_names_another_issuer(
    oidc_provider: Provider,
) -> None:
    # The same server under another name: its metadata names 127.0.0.1, not localhost.
    other_name = oidc_provider.issuer.replace("127.0.0.1", "localhost")

    with pytest.raises(Invalid) as refused:
        await sso.discover(other_name, development=True)

    assert refused.value.code == "sso-issuer-mismatch"
    assert oidc_provider.issuer in refused.value.detail


# --- The code flow ------------------------------------------------------------------------


def test_the_authorization_request_uses_pkce_state_and_nonce() -> None:
    config = sso.Config(
        "https://idp.example",
        "app",
        "secret",
        {"authorization_endpoint": "https://idp.example/auth?tenant=1"},
    )

    first = sso.authorization_request(config, REDIRECT_URI)
    second = sso.authorization_request(config, REDIRECT_URI)

    assert first.url.startswith("https://idp.example/auth?tenant=1&response_type=code&")
    assert "code_challenge_method=S256" in first.url
    assert "scope=openid+email+profile" in first.url
    assert first.code_verifier not in first.url  # only its S256 challenge travels
    assert len({first.state, first.nonce, first.code_verifier, second.state}) == 4


@pytest.mark.parametrize("client_id", ["require2fa", "require2fa-post"])
async def test_a_sign_in_yields_the_claims_the_provider_asserted(
    oidc_provider: Provider, client_id: str
) -> None:
    config = await config_for(oidc_provider, client_id)
    before = datetime.now(UTC) - timedelta(seconds=5)

    request, params = await sign_in(
        oidc_provider,
        config,
        sub=f"alice-{client_id}",
        email="Alice@Example.com",
        amr=["pwd", "hwk"],
        acr="phrh",
    )
    claims = await finish(config, request, params)

    assert claims.issuer == oidc_provider.issuer
    assert claims.sub == f"alice-{client_id}"
    assert claims.email == "alice@example.com"
    assert claims.email_verified is True
    assert claims.amr == ("pwd", "hwk")
    assert claims.acr == "phrh"
    assert claims.auth_time is not None and claims.auth_time >= before.replace(microsecond=0)
    assert claims.raw["aud"] == client_id


async def test_a_callback_with_another_state_is_refused(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request, params = await sign_in(oidc_provider, config, sub="bob", email="bob@example.com")

    with pytest.raises(Invalid) as refused:
        await finish(config, request, params | {"state": "someone-elses"})

    assert refused.value.code == "sso-state"
    # The code was not spent: the right state still signs in.
    assert (await finish(config, request, params)).sub == "bob"


async def test_a_replayed_code_is_refused(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request, params = await sign_in(oidc_provider, config, sub="carol", email="carol@example.com")
    assert (await finish(config, request, params)).sub == "carol"

    with pytest.raises(Invalid) as refused:
        await finish(config, request, params)

    assert refused.value.code == "sso-refused"
    assert "invalid_grant" in refused.value.detail or "grant" in refused.value.detail


async def test_an_id_token_for_another_client_is_refused(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request, params = await sign_in(oidc_provider, config, sub="dave", email="dave@example.com")
    await oidc_provider.tamper(aud="another-app", azp="another-app")

    with pytest.raises(Invalid) as refused:
        await finish(config, request, params)

    assert refused.value.code == "sso-refused"
    assert "aud" in refused.value.detail


async def test_an_id_token_with_another_nonce_is_refused(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request, params = await sign_in(oidc_provider, config, sub="erin", email="erin@example.com")

    with pytest.raises(Invalid) as refused:
        await finish(config, request._replace(nonce="another-nonce"), params)

    assert refused.value.code == "sso-refused"
    assert "nonce" in refused.value.detail


async def test_an_expired_id_token_is_refused(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request, params = await sign_in(oidc_provider, config, sub="fay", email="fay@example.com")

    with pytest.raises(Invalid) as refused:
        await finish(config, request, params, now=datetime.now(UTC) + timedelta(days=1))

    assert refused.value.code == "sso-refused"
    assert "expired" in refused.value.detail.lower()


async def test_an_id_token_from_another_issuer_is_refused(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request, params = await sign_in(oidc_provider, config, sub="gus", email="gus@example.com")
    await oidc_provider.tamper(iss="https://evil.example")

    with pytest.raises(Invalid) as refused:
        await finish(config, request, params)

    assert refused.value.code == "sso-refused"
    assert "iss" in refused.value.detail


async def test_an_unverified_email_is_surfaced_as_a_flag(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request, params = await sign_in(
        oidc_provider, config, sub="hal", email="hal@example.com", email_verified=False
    )

    claims = await finish(config, request, params)

    assert claims.email == "hal@example.com"
    assert claims.email_verified is False


async def test_the_provider_refusing_the_sign_in_is_a_sentence(oidc_provider: Provider) -> None:
    config = await config_for(oidc_provider)
    request = sso.authorization_request(config, REDIRECT_URI)
    params = {"state": request.state, "error": "access_denied", "error_description": "no"}

    with pytest.raises(Invalid) as refused:
        await finish(config, request, params)

    assert refused.value.code == "sso-denied"


async def test_a_rotated_signing_key_is_fetched_once_and_accepted(
    oidc_provider: Provider, http: aiohttp.ClientSession
) -> None:
    config = await config_for(oidc_provider)
    keys = sso.KeyCache()
    request, params = await sign_in(oidc_provider, config, sub="ivy", email="ivy@example.com")
    first = await finish(config, request, params, keys=keys, http=http)
    old_kids = {key["kid"] for key in (await oidc_provider.jwks())["keys"]}

    new_kid = await oidc_provider.rotate_key()
    request, params = await sign_in(oidc_provider, config, sub="ivy", email="ivy@example.com")
    second = await finish(config, request, params, keys=keys, http=http)

    assert new_kid not in old_kids
    assert first.sub == second.sub == "ivy"
    cached = await keys.get(http, config.metadata["jwks_uri"], refresh=False)
    assert new_kid in {key.kid for key in cached.keys}
