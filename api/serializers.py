"""Our rows as the API's JSON shapes (`api.shapes`): camelCase keys, string ids, times as
`datetime`s (orjson writes them in ISO 8601). Each function returns an instance of its model,
which mypy checks key by key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from api.shapes import (
    ApiToken,
    AuditActor,
    AuditEntry,
    Authenticator,
    Delivery,
    Exemption,
    LastResponse,
    Member,
    MemberUser,
    Organization,
    Role,
    Run,
    RunBrief,
    Session,
    SsoConfig,
    SsoLink,
    TargetUser,
    Team,
    User,
    Webhook,
)
from require2fa import audit_log, compliance, single_sign_on
from require2fa.requirement import Scope

Row = Any  # an asyncpg.Record, or a mapping with its columns


def _id(value: int | None) -> str | None:
    return str(value) if value is not None else None


def serialize_user(user: Row) -> User:
    return {
        "id": str(user["id"]),
        "email": user["email"],
        "name": user["name"],
        "has2fa": bool(user["has2fa"]),
        "isSuperuser": user["is_superuser"],
        "dateJoined": user["created_at"],
    }


def serialize_token(row: Row) -> ApiToken:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "dateCreated": row["created_at"],
        "lastUsedAt": row["last_used_at"],
    }


def serialize_session(row: Row, current: int | None) -> Session:
    return {
        "id": str(row["id"]),
        "current": row["id"] == current,
        "createdAt": row["created_at"],
        "lastSeenAt": row["last_seen_at"],
        "ipAddress": row["ip_address"],
        "userAgent": row["user_agent"],
    }


def serialize_authenticator(row: Row) -> Authenticator:
    data: Authenticator = {
        "id": str(row["id"]),
        "type": row["type"],
        "name": row["name"],
        "createdAt": row["created_at"],
        "lastUsedAt": row["last_used_at"],
    }
    if row["type"] == "sms":
        data["phone"] = row["phone_hint"]
    if row["type"] == "recovery":
        data["unusedCodes"] = row["unused_codes"]
    return data


def serialize_org(org: Row, *, role: str, enforcement: RunBrief | None = None) -> Organization:
    data: Organization = {
        "id": str(org["id"]),
        "slug": org["slug"],
        "name": org["name"],
        "require2FA": org["require_2fa"],
        "require2FALevel": org["require_2fa_level"],
        # The flag-only form, or an identity provider configured (`sso_mfa`, migration 0220).
        "ssoEnabled": bool(org["sso_enabled"] or org.get("sso_mfa")),
        "enforceAt": org.get("enforce_at"),
        "require2FAScope": cast(Any, Scope.of(org).as_json()),  # null: everyone
        "require2FAAction": org["require_2fa_action"],
        "dateCreated": org["created_at"],
        "role": cast(Role, role),  # the caller's: one of `members.ROLES`
    }
    if enforcement is not None:
        data["enforcement"] = enforcement
    return data


def serialize_team(team: Row) -> Team:
    return {
        "id": str(team["id"]),
        "slug": team["slug"],
        "name": team["name"],
        "memberCount": team.get("member_count", 0),
        "dateCreated": team["created_at"],
    }


def _exemption(row: Row) -> Exemption | None:
    """`{reason, until, by}` while the member's exemption lasts, else None."""
    if not row.get("exempt_2fa"):
        return None
    return {
        "reason": row["exempt_2fa_reason"],
        "until": row["exempt_2fa_until"],
        "by": {"id": _id(row["exempt_2fa_by"]), "name": row["exempt_2fa_by_label"]},
    }


def serialize_member(row: Row) -> Member:
    user: MemberUser | None = None
    if row["user_id"] is not None:
        user = {
            "id": str(row["user_id"]),
            "email": row["user_email"],
            "name": row["user_name"],
            "has2fa": row["has2fa"],
            "meetsRequirement": row["meets_level"],
        }
    pending_reason = row["pending_reason"]
    return {
        "id": str(row["id"]),
        "email": row["email"],
        "name": row["user_name"] or row["email"],
        "role": row["role"],
        "teams": list(row["team_slugs"]),
        "settings": row["settings"],
        "pending": user is None,
        "pendingReason": (
            row["removal_reason"] or pending_reason if pending_reason == "2fa" else pending_reason
        ),
        "reinstateBy": row["reinstate_by"],
        "lastRemindedAt": row.get("last_reminded_at"),
        "exempt2FA": _exemption(row),
        "blocked": bool(row.get("blocked")),
        "dateCreated": row["created_at"],
        "user": user,
        "sso": _sso_link(row),
    }


def _sso_link(row: Row) -> SsoLink | None:
    """The member's latest sign-in through the identity provider, or None when not linked."""
    signed_in_at = row.get("sso_last_sign_in_at")
    if signed_in_at is None:
        return None
    amr = list(row["sso_amr"] or [])
    return {
        "linked": True,
        "lastSignInAt": signed_in_at,
        "amr": amr,
        "meetsRequirement": row["sso_mfa"] == "idp"
        and compliance.idp_assertion_counts(
            amr,
            row["sso_acr"],
            row["require_2fa_level"],
            signed_in_at=signed_in_at,
            now=datetime.now(UTC),
        ),
    }


def serialize_sso_config(row: Row, *, base_url: str) -> SsoConfig:
    return {
        "issuer": row["issuer"],
        "clientId": row["client_id"],
        "mfa": row["mfa"],
        "redirectUri": single_sign_on.redirect_uri(base_url),
        "hasClientSecret": bool(row["client_secret_encrypted"]),
        "domains": list(row["domains"]),
        "dateUpdated": row["updated_at"],
    }


def serialize_run_brief(run: Row) -> RunBrief:
    """The `{id, status}` that the organization's PUT answers (and `enforceAt` on a date)."""
    brief: RunBrief = {"id": str(run["id"]), "status": run["status"]}
    if run["enforce_at"] is not None:
        brief["enforceAt"] = run["enforce_at"]
    return brief


def serialize_run(run: Row, *, emails: tuple[int, int] | None = None) -> Run:
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
        "dateCreated": run["created_at"],
        "startedAt": run["started_at"],
        "finishedAt": run["finished_at"],
        "error": run["error"],
        "enforceAt": run["enforce_at"],
    }


def serialize_entry(row: Row) -> AuditEntry:
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "actor": cast(AuditActor | None, audit_log.actor_json(row)),
        "actorLabel": row["actor_label"],
        "targetUser": cast(TargetUser | None, audit_log.target_user_json(row, row["data"])),
        "targetMember": _id(row["target_member_id"]),
        "ipAddress": str(row["ip_address"]) if row["ip_address"] is not None else None,
        "data": row["data"],
        "dateCreated": row["created_at"],
    }


def serialize_webhook(row: Row, *, secret: str | None = None) -> Webhook:
    data: Webhook = {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "active": row["active"],
        "dateCreated": row["created_at"],
    }
    if secret is not None:
        data["secret"] = secret
    return data


def serialize_delivery(row: Row) -> Delivery:
    last: LastResponse | None = None
    if row["last_status"] is not None:
        last = {"status": row["last_status"], "body": row["last_body"] or ""}
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "auditLogId": str(row["audit_log_id"]) if row["audit_log_id"] is not None else None,
        "status": row["status"],
        "attempts": row["attempts"],
        "lastResponse": last,
        "lastError": row["last_error"],
        "dateCreated": row["created_at"],
        "nextAttemptAt": row["next_attempt_at"] if row["status"] in ("queued", "sending") else None,
        "deliveredAt": row["delivered_at"],
    }
