"""The organization's audit log (CONTRACT §8), for owners and managers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from api.access import MANAGERS, OrgAccess, org_access
from api.connection import connection
from api.errors import api_error
from api.jsonio import json_response
from api.pagination import link_header, page_args, split_page
from db import audit


def serialize_entry(row: asyncpg.Record) -> dict[str, Any]:
    actor: dict[str, Any] | None = None
    if row["actor_user_id"] is not None or row["actor_label"]:
        actor = {
            "type": "user" if row["actor_user_id"] is not None else "system",
            "id": str(row["actor_user_id"]) if row["actor_user_id"] is not None else None,
            "email": row["actor_email"],
            "name": row["actor_name"] or row["actor_label"],
            "tokenId": str(row["actor_token_id"]) if row["actor_token_id"] is not None else None,
        }
    target_user = None
    if row["target_user_id"] is not None:
        target_user = {"id": str(row["target_user_id"]), "email": row["data"].get("email")}
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "actor": actor,
        "actorLabel": row["actor_label"],
        "targetUser": target_user,
        "targetMember": (
            str(row["target_member_id"]) if row["target_member_id"] is not None else None
        ),
        "ipAddress": str(row["ip_address"]) if row["ip_address"] is not None else None,
        "data": row["data"],
        "dateCreated": row["created_at"].isoformat(),
    }


@dataclass(frozen=True)
class AuditPage:
    event: str | None
    cursor: int | None
    rows: list[asyncpg.Record]
    next_cursor: int | None


async def audit_page(request: web.Request, access: OrgAccess, *, per_page: int = 100) -> AuditPage:
    """The entries that `?event=`, `?cursor=` and `?per_page=` ask for, newest first (the API
    and the audit-log page)."""
    event = request.query.get("event") or None
    if event is not None and event not in audit.EVENTS:
        unknown = f"Unknown event: {event[:100]}"
        raise api_error(400, unknown, errors={"event": [unknown]})
    cursor, limit = page_args(request, default=per_page)
    async with connection(request) as conn:
        rows = await audit.page(
            conn,
            organization_id=access.org["id"],
            event=event,
            before_id=cursor,
            limit=limit + 1,
        )
    rows, next_cursor = split_page(rows, limit)
    return AuditPage(event=event, cursor=cursor, rows=rows, next_cursor=next_cursor)


async def list_audit_logs(request: web.Request) -> web.Response:
    """Audit entries, newest first, optionally of one `?event=`; cursor-paginated (`Link`)."""
    access = await org_access(request, roles=MANAGERS)
    found = await audit_page(request, access)
    rows, next_cursor = found.rows, found.next_cursor
    response = json_response(
        {"rows": [serialize_entry(row) for row in rows], "options": list(audit.EVENTS)}
    )
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response
