"""What an organization asks of its members, and how one requirement compares with another.

A `Requirement` is 2FA now (`required`) or from `enforce_at`, at `level`, of the members in
`scope` (`require2FAScope`: roles and teams, or everyone), who are removed or blocked in place
when they do not meet it (`action`, `require2FAAction`). Whether one asks less than another
(a change that needs a recent re-authentication) or more (a change that starts a run while it is
required) is judged here, and only here; `require2fa.organization_settings` plans a change with
it. Who is in a scope is `require2fa.compliance.in_scope` (and `in_scope_sql`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from db import organizations
from require2fa import compliance
from require2fa.errors import Invalid
from require2fa.members import ROLES

SCOPE_FIELD = "require2FAScope"
SCOPE_EMPTY = "A scope names at least one role or team; send null to require it of everyone."


@dataclass(frozen=True)
class Scope:
    """Whom the requirement applies to: members with one of `roles` or in one of `teams`
    (slugs); both empty is everyone (`EVERYONE`, what `null` asks for)."""

    roles: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()

    @classmethod
    def asked(cls, roles: list[str], teams: list[str]) -> Scope:
        """A scope as a client sends it (`{"roles": [...], "teams": [...]}`): known roles, at
        least one role or team. Whether the teams exist is `check_teams`'s."""
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise Invalid("unknown-role", f"Unknown role: {unknown[0]}", field=SCOPE_FIELD)
        if not roles and not teams:
            raise Invalid("empty-scope", SCOPE_EMPTY, field=SCOPE_FIELD)
        return cls(tuple(sorted(set(roles))), tuple(sorted(set(teams))))

    @classmethod
    def of(cls, org: Mapping[str, Any]) -> Scope:
        """The scope stored on an organization row."""
        return cls(
            tuple(org["require_2fa_scope_roles"] or ()), tuple(org["require_2fa_scope_teams"] or ())
        )

    @property
    def everyone(self) -> bool:
        return not self.roles and not self.teams

    def as_json(self) -> dict[str, list[str]] | None:
        """`require2FAScope` as the API shows it (and `org.edit` records it): null for everyone."""
        if self.everyone:
            return None
        return {"roles": list(self.roles), "teams": list(self.teams)}

    def widens(self, before: Scope) -> bool:
        """It may take in members that `before` left out."""
        return compliance.widens(before.roles, before.teams, self.roles, self.teams)


EVERYONE = Scope()


async def check_teams(conn: asyncpg.Connection, organization_id: int, scope: Scope | None) -> None:
    """`Invalid` when `scope` names a team that the organization does not have."""
    if scope is None or not scope.teams:
        return
    found = await organizations.team_ids(conn, organization_id, list(scope.teams))
    missing = sorted(set(scope.teams) - found.keys())
    if missing:
        raise Invalid("unknown-team", f"Unknown team: {missing[0]}", field=SCOPE_FIELD)


@dataclass(frozen=True)
class Requirement:
    """What an organization asks of its members: 2FA now (`required`) or from `enforce_at`, at
    `level`, of the members in `scope`, who are removed or blocked (`action`) when they do not
    meet it. Whether one asks less than another is judged here, and only here."""

    required: bool
    level: str
    enforce_at: Any  # a scheduled date (the requirement is off until then), or None
    scope: Scope = EVERYONE
    action: str = compliance.DEFAULT_ACTION

    @classmethod
    def of(cls, org: Mapping[str, Any]) -> Requirement:
        return cls(
            org["require_2fa"],
            org["require_2fa_level"],
            org["enforce_at"],
            Scope.of(org),
            org["require_2fa_action"],
        )

    def looser_than(self, before: Requirement) -> bool:
        """Turned off, its level lowered, its scope narrowed, or its scheduled date cancelled or
        postponed (each needs a recent re-authentication)."""
        return (
            (before.required and not self.required)
            or compliance.is_stricter(before.level, self.level)
            or before.scope.widens(self.scope)
            or (
                before.enforce_at is not None
                and not self.required
                and (self.enforce_at is None or self.enforce_at > before.enforce_at)
            )
        )

    def raised_from(self, before: Requirement) -> bool:
        """Required before and after, and asking more: a stricter level, a wider scope, or
        blocking turned into removal (members are judged again by a run)."""
        return (
            before.required
            and self.required
            and (
                compliance.is_stricter(self.level, before.level)
                or self.scope.widens(before.scope)
                or (before.action == "block" and self.action == "remove")
            )
        )

    def edits(self, before: Requirement) -> dict[str, Any]:
        """The `org.edit` data of its scope and action (the level's is the settings')."""
        data: dict[str, Any] = {}
        if self.scope != before.scope:
            data["require_2fa_scope"] = self.scope.as_json()
        if self.action != before.action:
            data["require_2fa_action"] = f"to {self.action}"
        return data
