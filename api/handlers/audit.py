"""The organization's audit log (events in `db.audit.EVENTS`), for owners and managers."""

from __future__ import annotations

from aiohttp import web

from api import org_actions
from api.access import MANAGERS, org_access
from api.jsonio import json_response
from api.pagination import link_header
from api.serializers import serialize_entry
from api.shapes import AuditPage
from require2fa import audit_log


async def list_audit_logs(request: web.Request) -> web.Response:
    """Audit entries, newest first, optionally of one `?event=`; cursor-paginated (`Link`)."""
    access = await org_access(request, roles=MANAGERS)
    found = await org_actions.audit_page(request, access)
    page: AuditPage = {
        "rows": [serialize_entry(row) for row in found.rows],
        "options": list(audit_log.EVENTS),
    }
    response = json_response(page)
    response.headers["Link"] = link_header(request, next_cursor=found.next_cursor)
    return response
