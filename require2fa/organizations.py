"""Creating an organization (its creator becomes its owner) and its teams.

A slug is lowercase letters, digits and dashes, at most 50; made from the name when not given.
`new` is taken by the New organization page's path.
"""

from __future__ import annotations

import re

import asyncpg
import structlog

from db import members, organizations
from require2fa.errors import Conflict, Invalid

log = structlog.get_logger(__name__)

SLUG = r"^[a-z0-9][a-z0-9-]{0,49}$"
# Path segments of pages under /organizations/ that an organization's slug must not take.
RESERVED_SLUGS = frozenset({"new", "callback"})  # /organizations/new/, /auth/sso/callback/
MAX_NAME = 200


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50]
    if not slug:
        raise Invalid("slug-missing", "Choose a slug.", field="slug")
    return slug


def _slug(name: str, slug: str | None) -> str:
    if not name or len(name) > MAX_NAME:
        raise Invalid("name-missing", "Enter a name.", field="name")
    if slug is None:
        return slugify(name)
    if not re.match(SLUG, slug):
        raise Invalid(
            "slug-invalid", "A slug is lowercase letters, digits and dashes.", field="slug"
        )
    return slug


async def create_organization(
    pool: asyncpg.Pool, *, name: str, slug: str | None, owner_id: int, owner_email: str
) -> asyncpg.Record:
    """Creates the organization with `owner_id` as its owner; refuses a reserved slug
    (`Invalid`) or a taken one (`Conflict`)."""
    slug = _slug(name, slug)
    if slug in RESERVED_SLUGS:
        raise Invalid("slug-reserved", "This slug is reserved.", field="slug")
    async with pool.acquire() as conn, conn.transaction():
        org = await organizations.create(conn, slug=slug, name=name)
        if org is None:
            raise Conflict("slug-taken", "An organization with this slug already exists.")
        await members.insert_active(
            conn, organization_id=org["id"], user_id=owner_id, email=owner_email, role="owner"
        )
    log.info("organization created", organization=org["slug"], user_id=owner_id)
    return org


async def create_team(
    pool: asyncpg.Pool, *, organization_id: int, name: str, slug: str | None
) -> asyncpg.Record:
    """A new team; `Conflict` when the slug is taken in the organization."""
    async with pool.acquire() as conn:
        team = await organizations.create_team(
            conn, organization_id=organization_id, slug=slug or slugify(name), name=name
        )
    if team is None:
        raise Conflict("team-slug-taken", "A team with this slug already exists.")
    return team


async def of_user(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The user's organizations, each with the user's `role`."""
    async with pool.acquire() as conn:
        return await organizations.for_user(conn, user_id)


async def teams(pool: asyncpg.Pool, organization_id: int) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await organizations.teams(conn, organization_id)
