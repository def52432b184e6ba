"""The organization's audit log (CONTRACT §8), for owners and managers."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.access import MANAGERS, org_access
from api.errors import api_error
from api.keys import PG
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


async def list_audit_logs(request: web.Request) -> web.Response:
    """Audit entries, newest first, optionally of one `?event=`; cursor-paginated (`Link`)."""
    access = await org_access(request, roles=MANAGERS)
    event = request.query.get("event") or None
    if event is not None and event not in audit.EVENTS:
        raise api_error(
            400, "Invalid request.", errors={"event": [f"Unknown event: {event[:100]}"]}
        )
    cursor, per_page = page_args(request)
    async with request.app[PG].acquire() as conn:
        rows = await audit.page(
            conn,
            organization_id=access.org["id"],
            event=event,
            before_id=cursor,
            limit=per_page + 1,
        )
    rows, next_cursor = split_page(rows, per_page)
    response = web.json_response(
        {"rows": [serialize_entry(row) for row in rows], "options": list(audit.EVENTS)}
    )
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response
