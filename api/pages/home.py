"""The pages to start from: `/` (sign in or register; signed in, your organizations), New
organization, and an organization's overview with its compliance at a glance.

They call the domain functions that the API calls (`require2fa.organizations`, with
`api.access.org_access`), so a page creates, allows and refuses exactly what the API does.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from api.access import MANAGERS, org_access
from api.auth import authenticate
from api.connection import request_pool
from api.errors import status_of
from api.pages.base import html_errors, read_form, render, signed_in
from require2fa import compliance, rollout
from require2fa import organizations as organizations_domain
from require2fa.errors import Conflict, Invalid


@html_errors
async def home_page(request: web.Request) -> web.StreamResponse:
    """Signed out: what this is, and the ways in. Signed in: your organizations, and those that
    removed or blocked you for 2FA with what to do to get back in."""
    auth = await authenticate(request)
    if auth is None or auth.half_signed_in or auth.token_id is not None:
        return await render(request, "home.html", orgs=None, removed=[], blocked=[])
    pool = await request_pool(request)
    orgs = await organizations_domain.of_user(pool, auth.user_id)
    removed = await rollout.removed_from(pool, auth.user_id)
    blocked = await rollout.blocked_in(pool, auth.user_id)
    return await render(
        request,
        "home.html",
        orgs=orgs,
        removed=removed,
        blocked=blocked,
        has2fa=auth.user["has2fa"],
        needs={
            row["org_slug"]: compliance.needs(row["require_2fa_level"])
            for row in [*removed, *blocked]
        },
    )


@html_errors
async def new_organization_page(request: web.Request) -> web.StreamResponse:
    """A name (and a slug, made from the name when left empty); creates the organization with
    you as its owner through the API's `new_organization` and goes to its overview."""
    form = await read_form(request) if request.method == "POST" else None
    auth = await signed_in(request)
    if form is None:
        return await render(request, "new_organization.html", error=None, name="", slug="")
    name, slug = form.get("name", "").strip()[:200], form.get("slug", "").strip().lower()[:50]
    try:
        org = await organizations_domain.create_organization(
            await request_pool(request),
            name=name,
            slug=slug or None,
            owner_id=auth.user_id,
            owner_email=auth.user["email"],
        )
    except (Invalid, Conflict) as refused:
        return await render(
            request,
            "new_organization.html",
            status=status_of(refused),
            error=refused.detail,
            name=name,
            slug=slug,
        )
    raise web.HTTPSeeOther(f"/organizations/{quote(org['slug'], safe='')}/")


@html_errors
async def organization_page(request: web.Request) -> web.StreamResponse:
    """The overview: your role, and (for everyone who may see it) how many members there are,
    how many use 2FA, who is pending, and the latest enforcement run."""
    auth = await signed_in(request)
    slug = request.match_info["org"]
    mine = await organizations_domain.of_user(await request_pool(request), auth.user_id)
    org = next((row for row in mine if row["slug"] == slug), None)
    if org is None:
        return await render(
            request,
            "error.html",
            status=404,
            title="Not found",
            message="This organization does not exist, or you are not a member of it.",
        )
    try:
        access = await org_access(request)
    except web.HTTPException as exc:
        if exc.status != 401:
            raise
        # The organization requires 2FA and you have none: say so, show nothing else.
        return await render(
            request,
            "organization.html",
            org=org,
            role=org["role"],
            orgs=mine,
            needs_2fa=True,
            needs=compliance.needs(org["require_2fa_level"]),
            counts=None,
            run=None,
            section="overview",
        )
    pool = await request_pool(request)
    counts = await rollout.member_counts(pool, org["id"])
    current = await rollout.current_run(pool, org["id"]) if access.role in MANAGERS else None
    run = current.run if current is not None else None
    return await render(
        request,
        "organization.html",
        org=access.org,
        role=access.role,
        orgs=mine,
        needs_2fa=False,
        needs=compliance.needs(access.org["require_2fa_level"]),
        counts=counts,
        share=_share(counts["enrolled"], counts["active"]),
        run=run,
        section="overview",
    )


def _share(part: int, whole: int) -> dict[str, int]:
    """A percentage, and the 5% step the meter's width class uses."""
    percent = round(100 * part / whole) if whole else 0
    return {"percent": percent, "step": 5 * round(percent / 5)}
