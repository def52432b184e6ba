"""The compliance report: one CSV row per member of an organization, streamed by COPY.

PostgreSQL writes the CSV itself (`COPY (select …) TO STDOUT`), and asyncpg hands it on chunk by
chunk to an async sink (the HTTP response, a file) while it stops reading from the server until
the sink has taken the chunk: nothing grows with the organization, neither on the server nor in
the web process. One statement, so the report is one consistent snapshot of the organization.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from require2fa import compliance

# The columns, in order (README, `require2fa report`): the CSV's header row.
COLUMNS = (
    "email",
    "name",
    "role",
    "teams",
    "state",
    "factor_types",
    "2fa_since",
    "reinstate_by",
    "last_reminded",
)

# Times as ISO 8601 in UTC, whatever the session's TimeZone and DateStyle.
_ISO = """to_char({col} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""

# Member by member in id order along `members_org_id`; each member's teams and factors are index
# probes. Free text (email, name) goes through `csv_cell` (migration 0130) against formulas.
# Factor types are the kinds of the member's confirmed factors that count (`require2fa.compliance`),
# and `idp` while the organization's identity provider asserted a second factor that meets the
# level (`compliance.idp_mfa_sql`, single sign-on with `mfa: idp`).
REPORT_SQL = f"""
select csv_cell(m.email) as "email",
       csv_cell(coalesce(u.name, '')) as "name",
       m.role as "role",
       coalesce((select string_agg(t.slug, ' ' order by t.slug) from member_teams mt
                 join teams t on t.id = mt.team_id where mt.member_id = m.id), '') as "teams",
       case when m.user_id is null then 'pending'
            when m.exempt_2fa_until > now() then 'exempt'
            when m.blocked_at is not null then 'blocked'
            else 'active' end as "state",
       concat_ws(' ', f.types, case when m.user_id is not null and {
    compliance.idp_mfa_sql("m.user_id", "$1", level_sql="o.require_2fa_level")
} then 'idp' end) as "factor_types",
       {_ISO.format(col="f.since")} as "2fa_since",
       {_ISO.format(col="m.reinstate_by")} as "reinstate_by",
       {_ISO.format(col="m.last_reminded_at")} as "last_reminded"
from members m
cross join (select require_2fa_level from organizations where id = $1) o
left join users u on u.id = m.user_id
left join lateral (
    select string_agg(distinct a.type, ' ' order by a.type) as types,
           min(a.confirmed_at) as since
    from authenticators a
    where a.user_id = m.user_id and {compliance.factor_counts_sql("a")}
) f on m.user_id is not null
where m.organization_id = $1
order by m.id
"""

Sink = Callable[[bytes], Awaitable[object]]


async def copy_report(conn: asyncpg.Connection, organization_id: int, sink: Sink) -> None:
    """Writes the organization's report (header row first) to `sink`, chunk by chunk."""
    await conn.copy_from_query(REPORT_SQL, organization_id, output=sink, format="csv", header=True)
