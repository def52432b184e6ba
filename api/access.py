"""Organization access: who may see an organization and what their role lets them do."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from api.auth import Auth, caller_in
from api.errors import api_error, path_id
from db.access import Row
from require2fa import compliance
from require2fa.members import MANAGERS

__all__ = ["MANAGERS", "OrgAccess", "member_id", "org_access"]
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")


@dataclass(frozen=True)
class OrgAccess:
    auth: Auth
    org: Row
    # The caller's membership as the check reads it (`db.access`: id, role, team_slugs,
    # exempt_2fa, meets_level); None only for a superuser who is not a member.
    member: Row | None

    @property
    def role(self) -> str:
        if self.member is None:
            return "owner"  # superusers act with an owner's rights
        return self.member["role"]

    def require_role(self, *roles: str) -> None:
        if self.role not in roles:
            raise api_error(403)


async def org_access(request: web.Request, *, roles: tuple[str, ...] | None = None) -> OrgAccess:
    """The organization named in the path, as the caller may see it.

    404 when it does not exist or the caller is not an active member (so that slugs do not
    leak); 401 `2fa-required` while the organization requires 2FA of the caller (they are in
    its scope, `require2fa.compliance.in_scope`) and they do not meet it: members blocked in
    place among them, whatever the credential (session or token).
    """
    slug = request.match_info["org"]
    auth, org, member = await caller_in(request, slug if _SLUG.match(slug) else None)
    if org is None or (member is None and not auth.user["is_superuser"]):
        raise api_error(404, "The requested organization does not exist.")
    if (
        org["require_2fa"]
        and member is not None
        and not member["meets_level"]
        and not member["exempt_2fa"]  # an exemption that lasts: never blocked for 2FA
        and compliance.in_scope(
            member["role"],
            member["team_slugs"],
            org["require_2fa_scope_roles"],
            org["require_2fa_scope_teams"],
        )
    ):
        raise api_error(
            401,
            "This organization requires two-factor authentication with"
            f" {compliance.needs(org['require_2fa_level'])}; set it up to continue.",
            code="2fa-required",
            require2FALevel=org["require_2fa_level"],
        )
    access = OrgAccess(auth=auth, org=org, member=member)
    if roles is not None:
        access.require_role(*roles)
    return access


def member_id(request: web.Request) -> int:
    """The member id in the path (`member_id`); 404 when it cannot be one."""
    return path_id(request, "member_id", not_found="The requested member does not exist.")
