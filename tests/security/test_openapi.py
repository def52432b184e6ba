"""`openapi.json` and the code agree (issue 10, point 10): every route is documented, and what
each serializer writes fits the schema derived from its model (`api.shapes`) as an answer reads.

Rows are built by hand in both forms a serializer can meet (optional parts present and absent),
so that a key added to a serializer without its schema, or the other way round, fails here even
where the fuzzing (`test_api_fuzz.py`) does not reach that answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import pytest

from api import answers
from api.jsonio import plain
from api.openapi import build
from api.routes import ROUTES
from api.serializers import (
    serialize_authenticator,
    serialize_delivery,
    serialize_entry,
    serialize_member,
    serialize_org,
    serialize_run,
    serialize_run_brief,
    serialize_session,
    serialize_team,
    serialize_user,
    serialize_webhook,
)
from tests.factories import owner_org_and_token

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
DOCUMENT = build()


def conforms(value: Any, shape: str) -> None:
    """Raises with the validator's message when `value`, as its JSON reads, does not fit
    `shape`."""
    schema = {"$ref": f"#/components/schemas/{shape}", "components": DOCUMENT["components"]}
    jsonschema_rs.validator_for(schema).validate(plain(value))


def test_every_route_and_only_routes_are_documented() -> None:
    routes = {(route.method, route.path) for route in ROUTES}
    assert set(answers.OPERATIONS) == routes
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            assert "default" not in operation["responses"], f"{method} {path}"
            assert any(status.startswith("2") for status in operation["responses"]), path


def test_metrics_is_documented_as_prometheus_text() -> None:
    answer = DOCUMENT["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(answer["content"]) == ["text/plain"]


def _member_row(**changes: Any) -> dict[str, Any]:
    row = {
        "id": 7,
        "email": "ada@example.com",
        "user_id": 3,
        "user_email": "ada@example.com",
        "user_name": "Ada",
        "has2fa": True,
        "meets_level": True,
        "role": "admin",
        "team_slugs": ["ops"],
        "settings": {"weekly": False},
        "pending_reason": None,
        "removal_reason": None,
        "reinstate_by": None,
        "last_reminded_at": None,
        "exempt_2fa": False,
        "created_at": NOW,
    }
    return {**row, **changes}


MEMBERS = {
    "active": _member_row(),
    "removed for 2fa": _member_row(
        user_id=None,
        user_name=None,
        pending_reason="2fa",
        removal_reason="2fa-level",
        reinstate_by=NOW + timedelta(days=90),
        last_reminded_at=NOW,
    ),
    "exempt": _member_row(
        exempt_2fa=True,
        exempt_2fa_by=1,
        exempt_2fa_by_label="owner@example.com",
        exempt_2fa_reason="CI bot",
        exempt_2fa_until=NOW + timedelta(days=30),
    ),
    "blocked": _member_row(blocked=True),
}


@pytest.mark.parametrize("row", MEMBERS.values(), ids=list(MEMBERS))
def test_member(row: dict[str, Any]) -> None:
    conforms(serialize_member(row), "Member")


ORG = {
    "id": 1,
    "slug": "alpha",
    "name": "Alpha",
    "require_2fa": True,
    "require_2fa_level": "secure",
    "sso_enabled": False,
    "enforce_at": None,
    "require_2fa_scope_roles": None,
    "require_2fa_scope_teams": None,
    "require_2fa_action": "remove",
    "created_at": NOW,
}
RUN = {
    "id": 4,
    "status": "completed",
    "total": 10,
    "removed": 3,
    "skipped": 1,
    "batches_total": 1,
    "batches_done": 1,
    "actor_user_id": 1,
    "actor_label": "owner@example.com",
    "created_at": NOW,
    "started_at": NOW,
    "finished_at": NOW,
    "error": None,
    "enforce_at": None,
}


def test_organization_and_run() -> None:
    conforms(serialize_org(ORG, role="owner"), "Organization")
    scoped = {**ORG, "require_2fa_scope_teams": ["web"], "require_2fa_action": "block"}
    conforms(serialize_org(scoped, role="owner"), "Organization")
    brief = serialize_run_brief({**RUN, "status": "scheduled", "enforce_at": NOW})
    conforms(serialize_org(ORG, role="owner", enforcement=brief), "Organization")
    conforms(serialize_run(RUN, emails=(3, 2)), "Run")
    queued = {**RUN, "status": "queued", "total": None, "started_at": None, "finished_at": None}
    conforms(serialize_run(queued), "Run")


def test_team_user_session() -> None:
    conforms(
        serialize_team({"id": 2, "slug": "ops", "name": "Ops", "created_at": NOW}),
        "Team",
    )
    user = {
        "id": 3,
        "email": "ada@example.com",
        "name": "Ada",
        "has2fa": False,
        "is_superuser": False,
        "created_at": NOW,
    }
    conforms(serialize_user(user), "User")
    session = {
        "id": 9,
        "created_at": NOW,
        "last_seen_at": NOW,
        "ip_address": None,
        "user_agent": "curl",
    }
    conforms(serialize_session(session, current=9), "Session")


@pytest.mark.parametrize(
    "row",
    [
        {"type": "totp", "name": "Phone app", "last_used_at": None},
        {"type": "sms", "name": "Backup phone", "phone_hint": "+1******0123", "last_used_at": NOW},
        {"type": "recovery", "name": "Recovery codes", "unused_codes": 9, "last_used_at": None},
        {"type": "webauthn", "name": "YubiKey", "last_used_at": NOW},
    ],
    ids=lambda row: row["type"],
)
def test_authenticator(row: dict[str, Any]) -> None:
    data = serialize_authenticator({"id": 5, "created_at": NOW, **row})
    conforms(data, "Authenticator")
    conforms({**data, "recoveryCodes": ["abcd-efgh"]}, "Enrolled")


def test_audit_entry() -> None:
    row = {
        "id": 11,
        "event": "member.pending",
        "actor_user_id": None,
        "actor_label": "system",
        "actor_email": None,
        "actor_name": None,
        "actor_token_id": None,
        "target_user_id": 3,
        "target_member_id": 7,
        "ip_address": None,
        "data": {"email": "ada@example.com", "reason": "2fa"},
        "created_at": NOW,
    }
    conforms(serialize_entry(row), "AuditEntry")
    by_token = {**row, "actor_user_id": 1, "actor_token_id": 2, "ip_address": "203.0.113.9"}
    conforms(serialize_entry(by_token), "AuditEntry")


def test_webhook_and_delivery() -> None:
    hook = {
        "id": 1,
        "url": "https://hooks.example.com/",
        "events": ["*"],
        "active": True,
        "created_at": NOW,
    }
    conforms(serialize_webhook(hook), "Webhook")
    conforms(serialize_webhook({**hook, "active": False}), "Webhook")
    conforms(serialize_webhook(hook, secret="s3cret"), "Webhook")
    delivery = {
        "id": 1,
        "event": "member.invite",
        "audit_log_id": 11,
        "status": "queued",
        "attempts": 1,
        "last_status": 502,
        "last_body": "Bad gateway",
        "last_error": None,
        "created_at": NOW,
        "next_attempt_at": NOW,
        "delivered_at": None,
    }
    conforms(serialize_delivery(delivery), "Delivery")
    delivered = {**delivery, "status": "delivered", "last_status": None, "delivered_at": NOW}
    conforms(serialize_delivery(delivered), "Delivery")
    ping = {**delivery, "event": "ping", "audit_log_id": None}
    conforms(serialize_delivery(ping), "Delivery")


def test_a_key_the_schema_does_not_list_fails() -> None:
    """The schemas are closed: the check above would see a key added to a serializer."""
    data = plain(serialize_member(MEMBERS["active"]))
    with pytest.raises(jsonschema_rs.ValidationError):
        conforms({**data, "secretField": 1}, "Member")
    with pytest.raises(jsonschema_rs.ValidationError):
        conforms({key: value for key, value in data.items() if key != "role"}, "Member")


@pytest.mark.parametrize("query", ["per_page=-4", "per_page=0", "cursor=x", "per_page=1001"])
async def test_the_csv_report_refuses_what_the_json_one_refuses(client, pool, query) -> None:
    """The document says `per_page` is 1 to 1000 and `cursor` an id for either format; the CSV
    answered 200 to any of them (found by the fuzzing)."""
    owner, _, headers = await owner_org_and_token(pool, "alpha", "owner@example.com", has2fa=True)
    for fmt in ("json", "csv"):
        response = await client.get(
            f"/api/0/organizations/alpha/2fa-compliance/?format={fmt}&{query}", headers=headers
        )
        assert response.status == 400, (fmt, await response.text())
        assert (await response.json())["detail"]
