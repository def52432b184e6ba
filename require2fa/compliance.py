"""What satisfies the requirement: the one definition, as SQL for the set-based statements and as
a Python check for everything else.

A member meets their organization's requirement when one of their user's *confirmed* factors is
of a kind that the organization's level accepts, or while an exemption lasts. Every statement
that asks "has a second factor?" (the has2fa column, the member filters, the compliance counts,
the removal of a batch, the last-factor rule, the benchmark's bound) renders its condition with
`second_factor_sql`; in Python, whether a user meets it goes through `meets_requirement`, and
whether one factor counts (the last-factor rule) through `counts`. The partial index
`authenticators_second_factor` (see `INDEX_PREDICATE` and tests/test_compliance.py) covers
exactly `FACTOR_KINDS`, so that the probe stays an index-only anti-join. The rules themselves
are tested without a database in tests/require2fa/test_compliance_rules.py.

Extending it (data, not new code paths):
- a new factor kind: add it to `FACTOR_KINDS` (at the end: a kind's bit is its position) and to
  the levels that accept it, plus a migration that widens `authenticators.type`'s check,
  re-creates the partial index with `INDEX_PREDICATE` (the test compares the database's index
  with it), gives the kind its bit in the SQL function `factor_bit` (tests/db/test_counts.py
  compares it with `factor_bit` here) and calls `member_factor_counts_rebuild()`;
- a requirement level: add a row to `LEVELS`; statements that know the organization pass its
  level column as `level_sql` (e.g. `"o.require_2fa_level"`);
- an exemption: statements that know the member pass its column as `exempt_until_sql` (e.g.
  `"m.exempt_2fa_until"`); Python passes `exempt_until` and `now`.

All SQL here is text built from the constants of this module and from the SQL *expressions*
(column names) that our own statements pass: never from input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

# Factor kinds that can count as a second factor once confirmed (recovery codes never do).
FACTOR_KINDS: tuple[str, ...] = ("totp", "sms", "webauthn")

# Requirement levels, from the most lenient to the strictest: the kinds each accepts.
# `secure` leaves out text messages (SIM swaps, interception); `phishing-resistant` accepts only
# keys and passkeys, whose answers are bound to this site's origin.
LEVELS: dict[str, tuple[str, ...]] = {
    "any": FACTOR_KINDS,
    "secure": ("totp", "webauthn"),
    "phishing-resistant": ("webauthn",),
}
DEFAULT_LEVEL = "any"
# What a person is told a level needs (the removal email, the join and 2fa-required refusals).
LEVEL_NEEDS: dict[str, str] = {
    "any": "a second factor: an authenticator app, a security key or passkey, or a backup phone",
    "secure": "an authenticator app or a security key or passkey (a backup phone does not count)",
    "phishing-resistant": "a security key or passkey (authenticator apps and phones do not count)",
}

_WORD = re.compile(r"^[a-z][a-z0-9_-]*$")
# A column reference (`u.id`, `t.user_id`) or a `$n` parameter: what callers may pass as SQL.
_EXPRESSION = re.compile(
    r"^(\$[0-9]+(::[a-z_0-9]+(\[\])?)?|[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)?)$"
)


def _sql_list(kinds: Iterable[str]) -> str:
    words = list(kinds)
    for word in words:
        if not _WORD.match(word):
            raise ValueError(f"not a factor kind: {word!r}")
    return ", ".join(f"'{word}'" for word in words)


def _expression(sql: str) -> str:
    if not _EXPRESSION.match(sql):
        raise ValueError(f"not a column or parameter reference: {sql!r}")
    return sql


# The partial index's predicate on `authenticators` (no alias), as the migrations write it.
INDEX_PREDICATE = f"confirmed_at is not null and type in ({_sql_list(FACTOR_KINDS)})"


def _level_sql(level_sql: str, alias: str) -> str:
    """`{alias}.type` is accepted by the level that the expression `level_sql` evaluates to."""
    arms = " ".join(
        f"when '{name}' then {alias}.type in ({_sql_list(kinds)})"
        for name, kinds in LEVELS.items()
        if _WORD.match(name)
    )
    return f"(case coalesce({_expression(level_sql)}, '{DEFAULT_LEVEL}') {arms} else false end)"


def factor_counts_sql(alias: str = "a", *, level_sql: str | None = None) -> str:
    """SQL condition on one `authenticators` row (alias `alias`): a confirmed factor that
    counts (for the level `level_sql` evaluates to, when given; else any kind that counts)."""
    alias = _expression(alias)
    condition = f"{alias}.confirmed_at is not null and {alias}.type in ({_sql_list(FACTOR_KINDS)})"
    if level_sql is not None:
        condition += f" and {_level_sql(level_sql, alias)}"
    return condition


def second_factor_sql(user_id_sql: str = "u.id", *, level_sql: str | None = None) -> str:
    """SQL condition: the user `user_id_sql` has a confirmed factor that counts (for the level
    `level_sql` evaluates to, when given).

    An `exists` written inline (not a function), so that the planner can turn `not exists` into
    an anti-join on the partial index.
    """
    return (
        "exists (select 1 from authenticators a"
        f" where a.user_id = {_expression(user_id_sql)}"
        f" and {factor_counts_sql('a', level_sql=level_sql)})"
    )


def second_factor_probe_sql(user_id_sql: str = "u.id", *, level_sql: str | None = None) -> str:
    """`second_factor_sql` for a select list or a filter evaluated row by row (a page of
    members): the same `exists`, with an `offset 0` that keeps the planner from replacing it by a
    hashed subplan built from every factor of every organization. Each row then costs one probe
    of the partial index, whatever the size of the table. Not for the set-based statements: there
    `second_factor_sql` lets `not exists` become an anti-join."""
    return second_factor_sql(user_id_sql, level_sql=level_sql)[:-1] + " offset 0)"


def noncompliant_sql(
    user_id_sql: str = "u.id",
    *,
    level_sql: str | None = None,
    exempt_until_sql: str | None = None,
    idp_organization_sql: str | None = None,
) -> str:
    """SQL condition: the member does not meet the requirement (no factor that counts, and no
    exemption still running at the statement's `now()`; with `idp_organization_sql`, neither a
    lasting assertion of that organization's identity provider, `idp_mfa_sql`). Written as a
    conjunction with its `not exists` at the top, so that the planner turns it into an
    anti-join (it does not push a `not` through an `or` of "exempt or has a factor" before
    deciding). Use it as one term of a `where … and …` list."""
    factor = second_factor_sql(user_id_sql, level_sql=level_sql)
    condition = f"not {factor}"
    if exempt_until_sql is not None:
        condition = f"not coalesce({_expression(exempt_until_sql)} > now(), false) and {condition}"
    if idp_organization_sql is not None:
        idp = idp_mfa_sql(user_id_sql, idp_organization_sql, level_sql=level_sql)
        condition += f" and not {idp}"
    return condition


def factor_bit(kind: str) -> int:
    """The bit of a factor kind in a user's factor mask (`users.factor_mask`, kept by the
    triggers of migration 0150 with the SQL function `factor_bit`, which must agree): bit i for
    `FACTOR_KINDS[i]`, 0 for a kind that never counts (recovery codes)."""
    return 1 << FACTOR_KINDS.index(kind) if kind in FACTOR_KINDS else 0


def factor_mask(kinds: Iterable[str]) -> int:
    """The factor mask of a user whose confirmed factors are of `kinds`."""
    mask = 0
    for kind in kinds:
        mask |= factor_bit(kind)
    return mask


def level_bits(level: str | None) -> int:
    """The bits of the kinds that `level` accepts: a user meets it when
    `factor_mask & level_bits(level) != 0` (the same answer as `meets_requirement` without an
    exemption)."""
    return factor_mask(LEVELS[level_of(level)])


def level_bits_sql(level_sql: str) -> str:
    """SQL expression: `level_bits` of the level that the expression `level_sql` evaluates to
    (NULL: the default level)."""
    arms = " ".join(
        f"when '{name}' then {level_bits(name)}" for name in LEVELS if _WORD.match(name)
    )
    return f"(case coalesce({_expression(level_sql)}, '{DEFAULT_LEVEL}') {arms} else 0 end)"


def counts(kind: str, level: str | None = None) -> bool:
    """Whether a confirmed factor of `kind` counts as a second factor (for `level`, when given)."""
    return kind in LEVELS[level or DEFAULT_LEVEL]


def meets_requirement(
    kinds: Iterable[str],
    level: str | None = None,
    exempt_until: datetime | None = None,
    now: datetime | None = None,
) -> bool:
    """The Python check: a user whose confirmed factors are of `kinds` meets the requirement
    at `level`, or is exempt until after `now`."""
    if exempt_until is not None and now is not None and now < exempt_until:
        return True
    return any(counts(kind, level) for kind in kinds)


def level_of(level: str | None) -> str:
    """`level`, or the default when it is None; ValueError for a level that does not exist."""
    level = level or DEFAULT_LEVEL
    if level not in LEVELS:
        raise ValueError(f"not a requirement level: {level!r}")
    return level


def is_stricter(new: str | None, old: str | None) -> bool:
    """Whether `new` accepts fewer kinds than `old` (raising the level starts a run)."""
    order = list(LEVELS)
    return order.index(level_of(new)) > order.index(level_of(old))


def needs(level: str | None) -> str:
    """What a member must set up to meet `level`, as a phrase."""
    return LEVEL_NEEDS[level_of(level)]


# --- Scope: whom the requirement applies to (`require2FAScope`) ------------------------------
#
# An organization's scope is a set of roles and a set of team slugs, or nothing (everyone). A
# member is in scope when their role is one of the roles or they belong to one of the teams.
# Only members in scope must meet the requirement: every statement that judges a member (a
# run's candidates, the counts, the preview, the reminders) adds `in_scope_sql` to its `where`
# list beside `noncompliant_sql`, and Python (the ongoing check, joins) asks `in_scope`.


def in_scope_sql(
    member_id_sql: str = "m.id",
    role_sql: str = "m.role",
    *,
    roles_sql: str = "o.require_2fa_scope_roles",
    teams_sql: str = "o.require_2fa_scope_teams",
    organization_id_sql: str | None = None,
) -> str:
    """SQL condition: the member `member_id_sql` (with role `role_sql`) is in the scope whose
    roles and team slugs the array expressions `roles_sql`, `teams_sql` give (both null or
    empty: everyone; `organization_id_sql`, when given, the organization whose teams they are).

    Judged member by member: the teams are an `exists` probe of the primary key of
    `member_teams` (member, team), a few index entries whatever the teams' size. Not an
    `in (select …)` of the teams' members: PostgreSQL hashes such a subplan only while it fits
    in `work_mem`, and a team of 100,000 members (4 MB) would then be read again for every
    member. A statement over a whole organization's scope starts from `scope_members_sql`
    instead."""
    roles, teams = _expression(roles_sql), _expression(teams_sql)
    same_org = (
        f" and tm.organization_id = {_expression(organization_id_sql)}"
        if organization_id_sql is not None
        else ""
    )
    return (
        f"(coalesce(cardinality({roles}), 0) + coalesce(cardinality({teams}), 0) = 0"
        f" or coalesce({_expression(role_sql)} = any({roles}), false)"
        f" or exists (select 1 from member_teams mt join teams tm on tm.id = mt.team_id"
        f" where mt.member_id = {_expression(member_id_sql)}"
        f" and tm.slug = any({teams}){same_org}))"
    )


def scope_members_sql(organization_id_sql: str, *, roles_sql: str, teams_sql: str) -> str:
    """SQL query: the ids of the organization's members in the scope (`roles_sql`, `teams_sql`:
    array parameters, null for a part the scope does not have), the set that `in_scope_sql`
    tests member by member, for statements over a whole scope (a run's plan, a count) that
    start from it rather than read every member: the members of the scope's teams from
    `member_teams_team`, and those with one of its roles. A null part is planned away (its
    `is not null` guard is false before anything is read). Empty for everyone: the caller
    handles that case."""
    org, roles, teams = (_expression(x) for x in (organization_id_sql, roles_sql, teams_sql))
    return (
        f"select sm.id from members sm where {roles} is not null"
        f" and sm.organization_id = {org} and sm.role = any({roles})"
        " union"
        f" select mt.member_id from teams tm join member_teams mt on mt.team_id = tm.id"
        f" where {teams} is not null and tm.organization_id = {org} and tm.slug = any({teams})"
    )


def in_scope(
    role: str,
    teams: Iterable[str],
    scope_roles: Iterable[str] | None,
    scope_teams: Iterable[str] | None,
) -> bool:
    """The Python check of `in_scope_sql`: a member with `role` in the teams `teams` (slugs) is
    in the scope (`scope_roles`, `scope_teams`; both empty or None: everyone)."""
    roles, wanted = set(scope_roles or ()), set(scope_teams or ())
    if not roles and not wanted:
        return True
    return role in roles or bool(wanted & set(teams))


def widens(
    old_roles: Iterable[str] | None,
    old_teams: Iterable[str] | None,
    new_roles: Iterable[str] | None,
    new_teams: Iterable[str] | None,
) -> bool:
    """Whether the new scope may take in someone the old one left out (a run is then due)."""
    old_r, old_t, new_r, new_t = (
        set(x or ()) for x in (old_roles, old_teams, new_roles, new_teams)
    )
    if not old_r and not old_t:
        return False  # everyone already
    if not new_r and not new_t:
        return True
    return bool(new_r - old_r or new_t - old_t)


def narrows(
    old_roles: Iterable[str] | None,
    old_teams: Iterable[str] | None,
    new_roles: Iterable[str] | None,
    new_teams: Iterable[str] | None,
) -> bool:
    """Whether the new scope may leave out someone the old one took in (needs sudo)."""
    return widens(new_roles, new_teams, old_roles, old_teams)


# What the requirement does to a member in scope who does not meet it: `remove` (pending, with
# the window to rejoin) or `block` (stays a member, refused until they comply).
ACTIONS = ("remove", "block")
DEFAULT_ACTION = "remove"


# --- A second factor asserted by the identity provider (single sign-on with `mfa: idp`) ------

# OpenID Connect `amr` values (RFC 8176) that name a second factor.
IDP_MFA_AMR = frozenset({"mfa", "otp", "sms", "hwk", "swk", "pop", "face", "fpt"})
# Bound to the device or the origin: a hardware key, proof of possession; or an `acr` of
# phishing-resistant authentication (`phrh`: with a hardware-protected key).
IDP_PHISHING_RESISTANT_AMR = frozenset({"hwk", "pop"})
IDP_PHISHING_RESISTANT_ACR = frozenset({"phr", "phrh"})
# Per level, what a sign-in must have asserted: one of these `amr` values, or one of these
# `acr` values. `secure` is `any` without a lone `sms`. Rendered by `idp_mfa_meets` (Python)
# and `idp_mfa_sql` (SQL), so the two cannot drift.
IDP_LEVELS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "any": (IDP_MFA_AMR, frozenset()),
    "secure": (IDP_MFA_AMR - {"sms"}, frozenset()),
    "phishing-resistant": (IDP_PHISHING_RESISTANT_AMR, IDP_PHISHING_RESISTANT_ACR),
}
# How long a sign-in's assertion counts: a member whose latest SSO sign-in is older is judged
# by their own factors alone (and removed at the next run when they have none).
IDP_WINDOW_DAYS = 30


def idp_mfa_meets(amr: Iterable[str] | None, acr: str | None, level: str | None = None) -> bool:
    """Whether a sign-in whose ID token asserted `amr` and `acr` meets `level`: `any` — one of
    `IDP_MFA_AMR`; `secure` — the same, a lone `sms` aside; `phishing-resistant` — `hwk` or
    `pop`, or `acr` `phr`/`phrh` (`IDP_LEVELS`)."""
    amr_values, acr_values = IDP_LEVELS[level_of(level)]
    return bool(set(amr or ()) & amr_values) or acr in acr_values


def idp_assertion_counts(
    amr: Iterable[str] | None,
    acr: str | None,
    level: str | None,
    *,
    signed_in_at: datetime | None,
    now: datetime,
) -> bool:
    """`idp_mfa_meets` for a sign-in at `signed_in_at` that is still within `IDP_WINDOW_DAYS`
    at `now` (what a member's `sso.meetsRequirement` says; the organization being in `idp`
    mode is the caller's to know)."""
    if signed_in_at is None or now - signed_in_at > timedelta(days=IDP_WINDOW_DAYS):
        return False
    return idp_mfa_meets(amr, acr, level)


def _idp_level_sql(level_sql: str | None, alias: str) -> str:
    """The sign-in `{alias}` (an `sso_identities` row) asserted what the level needs (None:
    the default level)."""

    def arm(amr_values: frozenset[str], acr_values: frozenset[str]) -> str:
        terms = [f"{alias}.amr && array[{_sql_list(sorted(amr_values))}]::text[]"]
        if acr_values:
            terms.append(f"{alias}.acr in ({_sql_list(sorted(acr_values))})")
        return "(" + " or ".join(terms) + ")"

    if level_sql is None:
        return arm(*IDP_LEVELS[DEFAULT_LEVEL])
    arms = " ".join(
        f"when '{name}' then {arm(*values)}"
        for name, values in IDP_LEVELS.items()
        if _WORD.match(name)
    )
    return f"(case coalesce({_expression(level_sql)}, '{DEFAULT_LEVEL}') {arms} else false end)"


def idp_mfa_sql(user_id_sql: str, organization_id_sql: str, *, level_sql: str | None) -> str:
    """SQL condition: the organization `organization_id_sql` has an identity provider whose MFA
    counts (`sso_configs.mfa = 'idp'`), and the latest sign-in of one of the user's identities
    at it (each `sso_identities` row keeps its own latest), within `IDP_WINDOW_DAYS`, asserted
    what the level (`level_sql`) needs. False without SSO.

    An `exists`, as `second_factor_sql` is, so that `not exists` plans as an anti-join too."""
    user, org = _expression(user_id_sql), _expression(organization_id_sql)
    return (
        "exists (select 1 from sso_configs sc join sso_identities si"
        " on si.organization_id = sc.organization_id and si.issuer = sc.issuer"
        f" where sc.organization_id = {org} and sc.mfa = 'idp' and si.user_id = {user}"
        f" and si.last_sign_in_at > now() - interval '{IDP_WINDOW_DAYS} days'"
        f" and {_idp_level_sql(level_sql, 'si')})"
    )
