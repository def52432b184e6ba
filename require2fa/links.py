"""Every link the product hands out, built in one place.

Paths (`accept_path`, `security_path`, `organization_path`) are what the pages link to and
redirect to; `absolute` puts `BASE_URL` in front, for emails. Set-based statements that write
links for many members receive them built here, as an array parameter, rather than gluing
strings in SQL.
"""

from __future__ import annotations

from urllib.parse import quote

SECURITY_PATH = "/account/security/"
HOME_PATH = "/"
NEW_ORGANIZATION_PATH = "/organizations/new/"


def accept_path(member_id: int, token: str) -> str:
    """The email's way back in: `/accept/{member_id}/{token}/`."""
    return f"/accept/{int(member_id)}/{quote(token, safe='')}/"


def security_path() -> str:
    """Where a person sets up and manages their factors."""
    return SECURITY_PATH


def home_path() -> str:
    """`/`: the ways in, or (signed in) your organizations."""
    return HOME_PATH


def new_organization_path() -> str:
    return NEW_ORGANIZATION_PATH


def organization_path(slug: str, section: str = "") -> str:
    """An organization's page: `/organizations/{slug}/` or `/organizations/{slug}/{section}`
    (`section` ends with `/`, e.g. `members/`)."""
    return f"/organizations/{quote(slug, safe='')}/{section}"


def absolute(base_url: str, path: str) -> str:
    """`path` under `BASE_URL` (the settings' `base_url`, without a trailing slash)."""
    return base_url.rstrip("/") + path


def accept_url(base_url: str, member_id: int, token: str) -> str:
    return absolute(base_url, accept_path(member_id, token))


def security_url(base_url: str) -> str:
    return absolute(base_url, SECURITY_PATH)


def organization_url(base_url: str, slug: str, section: str = "") -> str:
    return absolute(base_url, organization_path(slug, section))


def pending_members_url(base_url: str, slug: str) -> str:
    """The members page filtered to the pending members (the run summary's link)."""
    return organization_url(base_url, slug, "members/") + "?query=is%3Apending"
