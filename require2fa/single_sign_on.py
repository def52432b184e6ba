"""Single sign-on of an organization as use cases: its configuration (owners), and a person
signing in through its identity provider (the relying party itself is `require2fa.sso`).

Saving reads the provider's discovery document first (`sso.discover`: a clear `Invalid` when it
cannot) and stores the client secret encrypted, with the email domains it signs in (each held by
one organization at most: another's is a `Conflict`); saving and deleting are audited
`org.sso-edit`. The sign-in page's entry names an organization by its slug or by an email
address at one of its domains. A domain only routes people to that identity provider: who may
sign in is still decided at the callback.
A sign-in's verified claims find the user already linked to (`iss`, `sub`), or, on the first
sign-in, the member of the organization whose email the provider verified (linked, audited
`member.sso-link`); anyone else is refused. Each sign-in records what it asserted (`amr`, `acr`,
`auth_time`), which `require2fa.compliance.idp_mfa_sql` reads under `mfa: idp`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from db import audit, users
from db import sso as sso_rows
from db.audit import Actor
from db.pool import Source, using
from require2fa import compliance, links, organizations, removal, sso
from require2fa.errors import Conflict, Invalid, NotAllowed, NotFound

OWNERS_ONLY = "Only an owner can change single sign-on."
NOT_CONFIGURED = "This organization does not sign in through an identity provider."
CALLBACK_PATH = "/auth/sso/callback/"
MAX_DOMAINS = 50
# A host name of two labels or more (`example.com`, `xn--bcher-kva.example`), lower-case.
_DOMAIN = re.compile(r"^(?=.{3,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def redirect_uri(base_url: str) -> str:
    """The address to paste into the identity provider: where it sends the browser back."""
    return f"{base_url.rstrip('/')}{CALLBACK_PATH}"


def _owner(role: str) -> None:
    if role != "owner":
        raise NotAllowed("owners-only", OWNERS_ONLY)


def email_domains(domains: Sequence[str]) -> list[str]:
    """The email domains as stored: trimmed, lower-case, without a leading `@` or a trailing
    dot, each once, in order. `Invalid` (field `domains`) for one that is not a host name."""
    found: list[str] = []
    for given in domains:
        domain = given.strip().lower().removeprefix("@").removesuffix(".")
        if not _DOMAIN.match(domain):
            raise Invalid(
                "sso-domain", f"{given.strip()[:100]!r} is not an email domain.", field="domains"
            )
        if domain not in found:
            found.append(domain)
    if len(found) > MAX_DOMAINS:
        raise Invalid("sso-domains", f"At most {MAX_DOMAINS} email domains.", field="domains")
    return sorted(found)


async def get_config(source: Source, organization_id: int) -> asyncpg.Record | None:
    """The organization's configuration row (its secret stays encrypted) with its `domains`,
    or None."""
    async with using(source) as conn:
        return await sso_rows.get_config(conn, organization_id)


async def save_config(
    pool: asyncpg.Pool,
    *,
    organization_id: int,
    actor: Actor,
    role: str,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    mfa: str,
    secret_key: str,
    development: bool,
    domains: Sequence[str] | None = None,
    http: aiohttp.ClientSession | None = None,
) -> asyncpg.Record:
    """Writes the organization's identity provider (owners): reads its discovery document over
    the network, encrypts the secret (None keeps the one saved), makes `domains` the email
    domains it signs in (None keeps the saved ones), audits `org.sso-edit`. `Invalid` when the
    issuer or a domain cannot be used, `Conflict` when another organization lists a domain."""
    _owner(role)
    if mfa not in sso.MFA_MODES:
        raise Invalid("sso-mfa", f"mfa must be one of: {', '.join(sso.MFA_MODES)}.", field="mfa")
    wanted = email_domains(domains) if domains is not None else None
    metadata = await sso.discover(issuer, development=development, http=http)
    issuer = sso.check_issuer(issuer, development=development)
    async with pool.acquire() as conn, conn.transaction():
        if client_secret is None:
            old = await sso_rows.get_config(conn, organization_id)
            if old is None:
                raise Invalid("sso-secret", "The client secret is required.", field="clientSecret")
            encrypted = bytes(old["client_secret_encrypted"])
        else:
            encrypted = sso.encrypt_client_secret(secret_key, client_secret)
        await sso_rows.save_config(
            conn,
            organization_id=organization_id,
            issuer=issuer,
            client_id=client_id,
            client_secret_encrypted=encrypted,
            mfa=mfa,
            metadata=metadata,
        )
        if wanted is not None:
            await _claim(conn, organization_id, wanted)
        saved = await sso_rows.get_config(conn, organization_id)  # with its domains
        assert saved is not None  # written above, in this transaction
        await audit.record(
            conn,
            organization_id=organization_id,
            event="org.sso-edit",
            actor=actor,
            data={
                "issuer": issuer,
                "client_id": client_id,
                "mfa": mfa,
                "domains": list(saved["domains"]),
            },
        )
    return saved


async def _claim(conn: asyncpg.Connection, organization_id: int, domains: list[str]) -> None:
    taken = await sso_rows.claim_domains(conn, organization_id=organization_id, domains=domains)
    if taken:
        which = ", ".join(taken)
        sentence = (
            f"The email domain {which} is already used by another organization's single sign-on."
            if len(taken) == 1
            else f"The email domains {which} are already used by other organizations' single"
            " sign-on."
        )
        raise Conflict("sso-domain-taken", sentence, field="domains", summary=sentence)


async def delete_config(
    pool: asyncpg.Pool, *, organization_id: int, actor: Actor, role: str
) -> None:
    """Deletes the organization's identity provider (owners), audited `org.sso-edit`; members
    then sign in with their own password and factors. `NotFound` when there is none."""
    _owner(role)
    async with pool.acquire() as conn, conn.transaction():
        row = await sso_rows.delete_config(conn, organization_id)
        if row is None:
            raise NotFound("sso-not-configured", NOT_CONFIGURED)
        await audit.record(
            conn,
            organization_id=organization_id,
            event="org.sso-edit",
            actor=actor,
            data={"issuer": row["issuer"], "deleted": True},
        )


@dataclass(frozen=True)
class Provider:
    """An organization's identity provider, ready to sign in with."""

    organization_id: int
    org_slug: str
    org_name: str
    level: str
    config: sso.Config


async def provider(source: Source, slug: str, *, secret_key: str) -> Provider:
    """The identity provider of the organization `slug`; `NotFound` without one."""
    async with using(source) as conn:
        row = await sso_rows.config_by_slug(conn, slug)
    if row is None:
        raise NotFound("sso-not-configured", NOT_CONFIGURED)
    return _provider(row, secret_key)


async def provider_for_entry(source: Source, entry: str, *, secret_key: str) -> Provider | None:
    """The identity provider the sign-in page's entry names: an organization's slug, or an email
    address at a domain an organization lists. None when the entry is neither (the page asks
    again); `NotFound` when no organization answers to it."""
    entry = entry.strip().lower()
    if "@" not in entry:
        return (
            await provider(source, entry, secret_key=secret_key)
            if re.match(organizations.SLUG, entry)
            else None
        )
    domain = entry.rpartition("@")[2].removesuffix(".")
    if len(entry) > 320 or not _DOMAIN.match(domain):
        return None
    async with using(source) as conn:
        row = await sso_rows.config_by_domain(conn, domain)
    if row is None:
        raise NotFound(
            "sso-domain-unknown",
            f"No organization signs in {domain} addresses through its identity provider. Enter"
            " your organization's name as it appears in its address, or sign in with your"
            " password.",
        )
    return _provider(row, secret_key)


def _provider(row: asyncpg.Record, secret_key: str) -> Provider:
    config = sso.Config(
        issuer=row["issuer"],
        client_id=row["client_id"],
        client_secret=sso.decrypt_client_secret(secret_key, row["client_secret_encrypted"]),
        metadata=row["metadata"],
        mfa=row["mfa"],
    )
    return Provider(row["id"], row["slug"], row["name"], row["require_2fa_level"], config)


@dataclass(frozen=True)
class SignedIn:
    """Who signed in through the identity provider, and whether they still owe their own
    second factor (`needs_second_factor`: they have one and the provider's MFA does not count
    for this sign-in, so the session starts half signed in)."""

    user: asyncpg.Record
    claims: sso.Claims
    linked_now: bool
    needs_second_factor: bool
    redirect: str


async def sign_in(
    pool: asyncpg.Pool, found: Provider, claims: sso.Claims, *, ip_address: str | None
) -> SignedIn:
    """The user behind verified `claims`: the one linked to (`iss`, `sub`), else the member of
    the organization whose email the provider verified (linked now, `member.sso-link`). Records
    the sign-in's `amr`, `acr` and `auth_time`. `NotAllowed` when no member has that email."""
    async with pool.acquire() as conn, conn.transaction():
        identity = await sso_rows.find_identity(conn, issuer=claims.issuer, sub=claims.sub)
        member: asyncpg.Record | None = None
        if identity is not None:
            user_id = identity["user_id"]
        else:
            member = await _member_to_link(conn, found, claims)
            user_id = member["user_id"]
        row = await sso_rows.record_sign_in(
            conn,
            issuer=claims.issuer,
            sub=claims.sub,
            user_id=user_id,
            organization_id=found.organization_id,
            amr=claims.amr,
            acr=claims.acr,
            auth_time=claims.auth_time,
        )
        if row["linked_now"] and member is not None:
            await audit.record(
                conn,
                organization_id=found.organization_id,
                event="member.sso-link",
                actor=Actor(user_id=user_id, label=member["email"], ip_address=ip_address),
                target_member_id=member["id"],
                target_user_id=user_id,
                data={"issuer": claims.issuer, "sub": claims.sub, "email": member["email"]},
            )
        # A sign-in whose MFA now meets the requirement lets a blocked member in at once.
        await removal.unblock_released(
            conn, actor=Actor(user_id=row["user_id"], ip_address=ip_address), user_id=row["user_id"]
        )
        user = await users.by_id(conn, row["user_id"])
    assert user is not None
    idp_counts = found.config.mfa == "idp" and compliance.idp_mfa_meets(
        claims.amr, claims.acr, found.level
    )
    return SignedIn(
        user=user,
        claims=claims,
        linked_now=bool(row["linked_now"]),
        needs_second_factor=bool(user["has2fa"]) and not idp_counts,
        redirect=links.organization_path(found.org_slug),
    )


async def _member_to_link(
    conn: asyncpg.Connection, found: Provider, claims: sso.Claims
) -> asyncpg.Record:
    """The member of the organization (active, or removed for 2FA with its account kept) whose
    email the provider verified; `NotAllowed` otherwise. An unverified email links nobody: the
    provider may let anyone type any address."""
    who = claims.email or "(none)"
    if claims.email is None or not claims.email_verified:
        raise NotAllowed(
            "sso-email-unverified",
            f"Your identity provider did not verify your email {who}, so it cannot be matched"
            f" to a member of {found.org_name}.",
        )
    member = await conn.fetchrow(
        """select id, email, coalesce(user_id, removed_user_id) as user_id from members
           where organization_id = $1 and email = $2
             and coalesce(user_id, removed_user_id) is not null""",
        found.organization_id,
        claims.email,
    )
    if member is None:
        raise NotAllowed(
            "sso-no-member",
            f"No member of {found.org_name} has the email {who}. Ask an owner of"
            f" {found.org_name} to invite you with it.",
        )
    return member


def session_record(claims: sso.Claims, org_slug: str) -> dict[str, Any]:
    """What the session keeps of the sign-in (CONTRACT: `amr`, `acr`, `auth_time`)."""
    return {
        "org": org_slug,
        "iss": claims.issuer,
        "amr": list(claims.amr),
        "acr": claims.acr,
        "auth_time": int(claims.auth_time.timestamp()) if claims.auth_time else None,
    }
