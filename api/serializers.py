"""JSON shapes of our rows, in the API's camelCase with string ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from require2fa import audit_log


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _exemption(row: asyncpg.Record) -> dict[str, Any] | None:
    """`{reason, until, by}` while the member's exemption lasts, else None."""
    if not row.get("exempt_2fa"):
        return None
    by = row["exempt_2fa_by"]
    return {
        "reason": row["exempt_2fa_reason"],
        "until": _iso(row["exempt_2fa_until"]),
        "by": {"id": str(by) if by is not None else None, "name": row["exempt_2fa_by_label"]},
    }


def serialize_org(org: asyncpg.Record, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(org["id"]),
        "slug": org["slug"],
        "name": org["name"],
        "require2FA": org["require_2fa"],
        "require2FALevel": org["require_2fa_level"],
        "ssoEnabled": org["sso_enabled"],
        # A scheduled requirement: when it starts (`require2FA` stays false until then).
        "enforceAt": _iso(org.get("enforce_at")),
        "dateCreated": org["created_at"].isoformat(),
        **extra,
    }


def serialize_team(team: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(team["id"]),
        "slug": team["slug"],
        "name": team["name"],
        "memberCount": team.get("member_count", 0),
        "dateCreated": team["created_at"].isoformat(),
    }


def serialize_member(row: asyncpg.Record) -> dict[str, Any]:
    user = None
    if row["user_id"] is not None:
        user = {
            "id": str(row["user_id"]),
            "email": row["user_email"],
            "name": row["user_name"],
            "has2fa": row["has2fa"],
            "meetsRequirement": row["meets_level"],
        }
    return {
        "id": str(row["id"]),
        "email": row["email"],
        "name": row["user_name"] or row["email"],
        "role": row["role"],
        "teams": list(row["team_slugs"]),
        "settings": row["settings"],
        "pending": row["user_id"] is None,
        # Removed for 2FA: `2fa` (no second factor) or `2fa-level` (none the level accepts).
        "pendingReason": (
            row["removal_reason"] or row["pending_reason"]
            if row["pending_reason"] == "2fa"
            else row["pending_reason"]
        ),
        "reinstateBy": row["reinstate_by"].isoformat() if row["reinstate_by"] else None,
        "lastRemindedAt": _iso(row.get("last_reminded_at")),
        "exempt2FA": _exemption(row),
        "dateCreated": row["created_at"].isoformat(),
        "user": user,
    }


def serialize_run(
    run: asyncpg.Record, *, brief: bool = False, emails: tuple[int, int] | None = None
) -> dict[str, Any]:
    """An enforcement run; `brief` is the `{id, status}` that the organization's PUT answers."""
    if brief:
        brief_form = {"id": str(run["id"]), "status": run["status"]}
        if run["enforce_at"] is not None:
            brief_form["enforceAt"] = _iso(run["enforce_at"])
        return brief_form
    queued, sent = emails or (0, 0)
    return {
        "id": str(run["id"]),
        "status": run["status"],
        "total": run["total"],
        "removed": run["removed"],
        "skipped": run["skipped"],
        "batchesTotal": run["batches_total"],
        "batchesDone": run["batches_done"],
        "emailsQueued": queued,
        "emailsSent": sent,
        "actor": {"id": _id(run["actor_user_id"]), "name": run["actor_label"]},
        "dateCreated": _iso(run["created_at"]),
        "startedAt": _iso(run["started_at"]),
        "finishedAt": _iso(run["finished_at"]),
        "error": run["error"],  # why a `failed` run stopped
        "enforceAt": _iso(run["enforce_at"]),  # a run on a date: when it starts
    }


def _id(value: int | None) -> str | None:
    return str(value) if value is not None else None


def serialize_entry(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "actor": audit_log.actor_json(row),
        "actorLabel": row["actor_label"],
        "targetUser": audit_log.target_user_json(row, row["data"]),
        "targetMember": (
            str(row["target_member_id"]) if row["target_member_id"] is not None else None
        ),
        "ipAddress": str(row["ip_address"]) if row["ip_address"] is not None else None,
        "data": row["data"],
        "dateCreated": row["created_at"].isoformat(),
    }


def serialize_webhook(row: asyncpg.Record, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "dateCreated": row["created_at"].isoformat(),
        **extra,
    }


def serialize_delivery(row: asyncpg.Record) -> dict[str, Any]:
    last = None
    if row["last_status"] is not None:
        last = {"status": row["last_status"], "body": row["last_body"] or ""}
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "auditLogId": str(row["audit_log_id"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "lastResponse": last,
        "lastError": row["last_error"],
        "dateCreated": row["created_at"].isoformat(),
        "nextAttemptAt": (
            row["next_attempt_at"].isoformat() if row["status"] in ("queued", "sending") else None
        ),
        "deliveredAt": row["delivered_at"].isoformat() if row["delivered_at"] else None,
    }
