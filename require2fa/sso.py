"""The OpenID Connect relying party of an organization's single sign-on.

One identity provider per organization (`db.sso`, table `sso_configs`): `discover` reads and
checks its metadata when an owner saves the configuration; `authorization_request` starts a
sign-in (authorization code flow, PKCE S256, `state`, `nonce`, scope `openid email profile`);
`finish` exchanges the code at the token endpoint and verifies the ID token. Whether what the
provider asserted counts as a second factor is `require2fa.compliance.idp_mfa_meets`.

The protocol and JOSE are Authlib's and joserfc's (Authlib's own JOSE layer, by the same
author): PKCE challenges from `authlib.oauth2.rfc7636`, signature and JWKS handling from
`joserfc` (which picks the key by `kid` and refuses `alg: none`), and the ID token's claims
rules (`iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, `at_hash`) from `authlib.oidc.core.CodeIDToken`.
They are maintained and follow the RFCs closely; a hand-written verifier is where the classic
mistakes (`alg` confusion, a skipped `aud`) live. HTTP is aiohttp, as everywhere else here.

The client secret is stored as a Fernet token under the key that SECRET_KEY derives for
"sso-client-secret", the way TOTP secrets are (`require2fa.totp`).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from cryptography.fernet import Fernet, InvalidToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from require2fa.errors import Invalid
from require2fa.security import fernet_key

MFA_MODES = ("local", "idp")
SCOPE = "openid email profile"
SECRET_PURPOSE = "sso-client-secret"
LEEWAY = 60  # seconds of clock skew accepted on `exp` and `iat`
TIMEOUT = 10  # seconds for each request to the provider
# Asymmetric signatures only: a shared-secret HS256 ID token would be signed with the client
# secret, which every organization's owner knows.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")


@dataclass(frozen=True)
class Config:
    """An organization's identity provider, the secret in the clear (`decrypt_client_secret`)."""

    issuer: str
    client_id: str
    client_secret: str
    metadata: Mapping[str, Any]
    mfa: str = "local"


class AuthorizationRequest(NamedTuple):
    """Where to send the browser, and what the session keeps until the callback."""

    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True)
class Claims:
    """What a verified ID token says about the person (`email_verified` is a flag to read:
    only a verified email may link a first sign-in to a member)."""

    issuer: str
    sub: str
    email: str | None
    email_verified: bool
    name: str | None
    amr: tuple[str, ...]
    acr: str | None
    auth_time: datetime | None
    raw: Mapping[str, Any] = field(repr=False)


class KeyCache:
    """Each issuer's JWKS as last fetched, shared by the sign-ins of one process. An ID token
    whose `kid` is not in it makes `finish` fetch the JWKS again, once (the provider rotated
    its keys)."""

    def __init__(self) -> None:
        self._sets: dict[str, KeySet] = {}

    async def get(self, http: aiohttp.ClientSession, jwks_uri: str, *, refresh: bool) -> KeySet:
        if refresh or jwks_uri not in self._sets:
            self._sets[jwks_uri] = KeySet.import_key_set(await _get_json(http, jwks_uri, "JWKS"))
        return self._sets[jwks_uri]


# --- The client secret at rest ------------------------------------------------------------


def encrypt_client_secret(secret_key: str, client_secret: str) -> bytes:
    return Fernet(fernet_key(secret_key, SECRET_PURPOSE)).encrypt(client_secret.encode())


def decrypt_client_secret(secret_key: str, stored: bytes) -> str:
    """The client secret; raises `Invalid` when it was stored under another SECRET_KEY."""
    try:
        return Fernet(fernet_key(secret_key, SECRET_PURPOSE)).decrypt(bytes(stored)).decode()
    except (InvalidToken, UnicodeDecodeError, ValueError) as err:
        raise Invalid(
            "sso-secret-unreadable",
            "The single sign-on client secret cannot be read; save the configuration again.",
        ) from err


# --- Discovery ----------------------------------------------------------------------------


def check_issuer(issuer: str, *, development: bool) -> str:
    """The issuer as configured (no trailing slash); `Invalid` unless it is an https URL
    (http too in development) without query or fragment."""
    issuer = issuer.strip().rstrip("/")
    parts = urlsplit(issuer)
    schemes = ("https", "http") if development else ("https",)
    if parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment:
        raise Invalid(
            "sso-issuer",
            "The issuer must be an https:// URL without a query or fragment.",
            field="issuer",
        )
    return issuer


async def discover(
    issuer: str, *, development: bool = False, http: aiohttp.ClientSession | None = None
) -> dict[str, Any]:
    """The provider's `{issuer}/.well-known/openid-configuration`, checked: it names the same
    issuer (the mix-up defence) and the endpoints a code flow needs. Reads over the network;
    raises `Invalid` with a sentence when the provider is unreachable or not OpenID."""
    issuer = check_issuer(issuer, development=development)
    url = f"{issuer}/.well-known/openid-configuration"
    async with _session(http) as session:
        metadata = await _get_json(session, url, "OpenID configuration", field_name="issuer")
    if not isinstance(metadata, dict) or not all(
        isinstance(metadata.get(key), str)
        for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
    ):
        raise Invalid(
            "sso-not-openid",
            f"{url} is not an OpenID Connect configuration (it lacks the issuer, endpoints or "
            "keys).",
            field="issuer",
        )
    if metadata["issuer"].rstrip("/") != issuer:
        raise Invalid(
            "sso-issuer-mismatch",
            f"The provider at {issuer} says its issuer is {metadata['issuer']}; use that "
            "exact issuer.",
            field="issuer",
        )
    if "code" not in metadata.get("response_types_supported", ["code"]):
        raise Invalid(
            "sso-not-openid",
            "The provider does not offer the authorization code flow.",
            field="issuer",
        )
    return metadata


# --- The sign-in --------------------------------------------------------------------------


def authorization_request(config: Config, redirect_uri: str) -> AuthorizationRequest:
    """A fresh `state`, `nonce` and PKCE verifier, and the provider's URL that starts the
    sign-in with them. Pure: the caller keeps the three in the session."""
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    query = urlencode(
        {
            "response_type": "code",
            "client_id": config.client_id,
            "redirect_uri": redirect_uri,
            "scope": SCOPE,
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    endpoint = config.metadata["authorization_endpoint"]
    separator = "&" if "?" in endpoint else "?"
    return AuthorizationRequest(f"{endpoint}{separator}{query}", state, nonce, verifier)


async def finish(
    config: Config,
    params: Mapping[str, str],
    expected_state: str,
    nonce: str,
    code_verifier: str,
    redirect_uri: str,
    *,
    keys: KeyCache | None = None,
    http: aiohttp.ClientSession | None = None,
    now: datetime | None = None,
) -> Claims:
    """The verified claims of the sign-in that came back with `params` (the callback's query).
    Exchanges the code at the provider's token endpoint (one use: a replayed code is refused
    there) and verifies the ID token; every refusal is `Invalid` with a sentence."""
    _check_callback(config, params, expected_state)
    async with _session(http) as session:
        tokens = await _exchange(session, config, params["code"], code_verifier, redirect_uri)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise _refused("the identity provider sent no ID token")
        cache = keys or KeyCache()
        jwks_uri = config.metadata["jwks_uri"]
        try:
            token = _decode(id_token, await cache.get(session, jwks_uri, refresh=False))
        except InvalidKeyIdError:
            token = _decode(id_token, await cache.get(session, jwks_uri, refresh=True))
    id_claims = CodeIDToken(
        token.claims,
        token.header,
        options={
            "iss": {"essential": True, "value": config.issuer},
            "aud": {"essential": True, "value": config.client_id},
            "nonce": {"essential": True},
        },
        params={
            "nonce": nonce,
            "client_id": config.client_id,
            "access_token": tokens.get("access_token"),
        },
    )
    try:
        id_claims.validate(now=int((now or datetime.now(UTC)).timestamp()), leeway=LEEWAY)
    except JoseError as err:
        raise _refused(f"its ID token does not hold ({err.error}: {err.description})") from err
    return _claims(config.issuer, token.claims)


def _check_callback(config: Config, params: Mapping[str, str], expected_state: str) -> None:
    state = params.get("state", "")
    if not expected_state or not hmac.compare_digest(state.encode(), expected_state.encode()):
        raise Invalid(
            "sso-state",
            "This sign-in does not belong to this browser session; start the sign-in again.",
        )
    # RFC 9207: a provider that names itself in the response must be the one we asked.
    if "iss" in params and params["iss"].rstrip("/") != config.issuer:
        raise _refused("the response came from another issuer")
    if "error" in params:
        reason = params.get("error_description") or params["error"]
        raise Invalid("sso-denied", f"The identity provider did not sign you in: {reason}.")
    if not params.get("code"):
        raise _refused("the response carries no authorization code")


async def _exchange(
    session: aiohttp.ClientSession,
    config: Config,
    code: str,
    code_verifier: str,
    redirect_uri: str,
) -> dict[str, Any]:
    """The token endpoint's answer for `code`, the client authenticated with
    client_secret_basic, or client_secret_post when that is all the provider supports."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    methods = config.metadata.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    headers = {"Accept": "application/json"}
    if "client_secret_basic" in methods:
        # RFC 6749 2.3.1: each part is form-encoded before the Basic scheme's base64.
        pair = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form |= {"client_id": config.client_id, "client_secret": config.client_secret}
    try:
        async with session.post(
            config.metadata["token_endpoint"],
            data=form,
            headers=headers,
        ) as response:
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise Invalid(
            "sso-unreachable", "The identity provider's token endpoint did not answer; try again."
        ) from err
    if not isinstance(answer, dict):
        raise _refused("its token endpoint answered something else than JSON")
    if response.status != 200 or "error" in answer:
        reason = answer.get("error_description") or answer.get("error") or response.status
        raise _refused(f"its token endpoint said {reason}")
    return answer


def _decode(id_token: str, key_set: KeySet) -> jwt.Token:
    try:
        return jwt.decode(id_token, key_set, algorithms=list(ALGORITHMS))
    except InvalidKeyIdError:
        raise
    except (JoseError, ValueError) as err:
        raise _refused("its ID token's signature does not verify") from err


def _claims(issuer: str, claims: Mapping[str, Any]) -> Claims:
    amr = claims.get("amr") or []
    auth_time = claims.get("auth_time")
    return Claims(
        issuer=issuer,
        sub=str(claims["sub"]),
        email=claims["email"].lower() if isinstance(claims.get("email"), str) else None,
        email_verified=claims.get("email_verified") is True,
        name=claims.get("name") if isinstance(claims.get("name"), str) else None,
        amr=tuple(str(method) for method in amr),
        acr=str(claims["acr"]) if claims.get("acr") is not None else None,
        auth_time=datetime.fromtimestamp(auth_time, UTC)
        if isinstance(auth_time, int | float)
        else None,
        raw=dict(claims),
    )


def _refused(why: str) -> Invalid:
    return Invalid("sso-refused", f"The single sign-on was refused: {why}.")


# --- HTTP ---------------------------------------------------------------------------------


class _session:
    """The caller's aiohttp session, or a short-lived one closed on exit."""

    def __init__(self, http: aiohttp.ClientSession | None) -> None:
        self._given = http
        self._own: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> aiohttp.ClientSession:
        if self._given is not None:
            return self._given
        self._own = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        return self._own

    async def __aexit__(self, *exc: object) -> None:
        if self._own is not None:
            await self._own.close()


async def _get_json(
    http: aiohttp.ClientSession, url: str, what: str, *, field_name: str | None = None
) -> Any:
    try:
        async with http.get(url, headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise Invalid(
                    "sso-not-openid",
                    f"{url} answered {response.status}: no {what} there.",
                    field=field_name,
                )
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise Invalid(
            "sso-unreachable",
            f"The identity provider did not answer at {url}; check the address.",
            field=field_name,
        ) from err
    except ValueError as err:
        raise Invalid(
            "sso-not-openid", f"{url} did not answer with JSON: no {what} there.", field=field_name
        ) from err
