"""The JSON shapes the API answers, as JSON Schema, and what each operation answers: success
statuses with their bodies, and the error statuses it can give (`openapi.json`, CONTRACT §5, §9).

Each shape lists every key its serializer writes, all required, no others: a key added to or
dropped from a serializer without its schema fails `tests/security/test_openapi.py` and the
fuzzing of `tests/security/test_api_fuzz.py`, which checks every answer against this document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.audit import EVENTS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these keys; all of them present but `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STR: Schema = {"type": "string"}
ID: Schema = {"type": "string", "pattern": "^[0-9]+$"}
INT: Schema = {"type": "integer", "minimum": 0}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
ROLE: Schema = {"enum": ["owner", "manager", "admin", "member", "billing"]}
LEVEL: Schema = {"enum": ["any", "secure", "phishing-resistant"]}
FACTOR: Schema = {"enum": ["totp", "sms", "webauthn", "recovery"]}
RUN_STATUS: Schema = {
    "enum": ["scheduled", "queued", "running", "completed", "cancelled", "failed"]
}
ANY_OBJECT: Schema = {"type": "object"}

# components/schemas, by name.
SHAPES: dict[str, Schema] = {
    "Error": obj(
        {
            "detail": STR,
            "errors": {"type": "object", "additionalProperties": array(STR)},
            # Clients act on these: `2fa-required`, `sudo-required`.
            "code": {"enum": ["2fa-required", "sudo-required"]},
            "requestId": STR,  # a 500's, to find it in the logs
            # The password was right; a second factor is needed (`auth/login/`, `auth/2fa/`).
            "2faRequired": BOOL,
            "interfaces": array(FACTOR),
            "smsSent": BOOL,
            "require2FALevel": LEVEL,
        },
        optional=(
            "errors",
            "code",
            "requestId",
            "2faRequired",
            "interfaces",
            "smsSent",
            "require2FALevel",
        ),
    ),
    "User": obj(
        {
            "id": ID,
            "email": STR,
            "name": STR,
            "has2fa": BOOL,
            "isSuperuser": BOOL,
            "dateJoined": TIME,
        }
    ),
    "ApiToken": obj({"id": ID, "name": STR, "dateCreated": TIME, "lastUsedAt": nullable(TIME)}),
    "NewApiToken": obj({"id": ID, "token": STR, "name": STR}),
    "Session": obj(
        {
            "id": ID,
            "current": BOOL,
            "createdAt": TIME,
            "lastSeenAt": TIME,
            "ipAddress": nullable(STR),
            "userAgent": nullable(STR),
        }
    ),
    "Sudo": obj({"sudoUntil": TIME}),
    "SmsSent": obj({"sent": BOOL, "phone": STR}),
    "SmsEnrollmentSent": obj({"phone": STR, "sent": BOOL, "expiresIn": INT}),
    "WebauthnOptions": obj({"publicKey": ANY_OBJECT}),
    "TotpSecret": obj({"secret": STR, "otpauthUrl": STR, "qrcode": STR}),
    "Authenticator": obj(
        {
            "id": ID,
            "type": FACTOR,
            "name": STR,
            "createdAt": TIME,
            "lastUsedAt": nullable(TIME),
            "phone": STR,  # backup phones, masked
            "unusedCodes": INT,  # recovery codes
        },
        optional=("phone", "unusedCodes"),
    ),
    "JoinStep": obj(
        {
            "orgSlug": STR,
            "orgName": STR,
            "email": STR,
            "memberId": ID,
            "pendingReason": nullable(STR),
            "acceptPath": STR,
        }
    ),
    "RecoveryCodes": obj({"recoveryCodes": array(STR)}),
    "RunBrief": obj({"id": ID, "status": RUN_STATUS, "enforceAt": TIME}, optional=("enforceAt",)),
    "Organization": obj(
        {
            "id": ID,
            "slug": STR,
            "name": STR,
            "require2FA": BOOL,
            "require2FALevel": LEVEL,
            "ssoEnabled": BOOL,
            "enforceAt": nullable(TIME),
            "dateCreated": TIME,
            "role": ROLE,  # the caller's
            "enforcement": ref("RunBrief"),  # PUT, when it turned the requirement on
        },
        optional=("enforcement",),
    ),
    "Team": obj({"id": ID, "slug": STR, "name": STR, "memberCount": INT, "dateCreated": TIME}),
    "Exemption": obj(
        {
            "reason": STR,
            "until": TIME,
            "by": obj({"id": nullable(ID), "name": nullable(STR)}),
        }
    ),
    "Member": obj(
        {
            "id": ID,
            "email": STR,
            "name": STR,
            "role": ROLE,
            "teams": array(STR),
            "settings": nullable(ANY_OBJECT),
            "pending": BOOL,
            "pendingReason": nullable(STR),
            "reinstateBy": nullable(TIME),
            "lastRemindedAt": nullable(TIME),
            "exempt2FA": nullable(ref("Exemption")),
            "dateCreated": TIME,
            "user": nullable(
                obj(
                    {
                        "id": ID,
                        "email": STR,
                        "name": STR,
                        "has2fa": BOOL,
                        "meetsRequirement": BOOL,
                    }
                )
            ),
        }
    ),
    "Reset2fa": obj({"member": ref("Member"), "deletedFactors": array(FACTOR), "removed": BOOL}),
    "Compliance": obj({"count": INT, "members": array(ref("Member"))}),
    "Run": obj(
        {
            "id": ID,
            "status": RUN_STATUS,
            "total": nullable(INT),
            "removed": INT,
            "skipped": INT,
            "batchesTotal": nullable(INT),
            "batchesDone": INT,
            "emailsQueued": INT,
            "emailsSent": INT,
            "actor": obj({"id": nullable(ID), "name": nullable(STR)}),
            "dateCreated": TIME,
            "startedAt": nullable(TIME),
            "finishedAt": nullable(TIME),
            "error": nullable(STR),
            "enforceAt": nullable(TIME),
        }
    ),
    "Accepted": obj({"detail": STR}),
    "AuditEntry": obj(
        {
            "id": ID,
            "event": {"enum": list(EVENTS)},
            "actor": nullable(
                obj(
                    {
                        "type": {"enum": ["user", "system"]},
                        "id": nullable(ID),
                        "email": nullable(STR),
                        "name": nullable(STR),
                        "tokenId": nullable(ID),
                    }
                )
            ),
            "actorLabel": nullable(STR),
            "targetUser": nullable(obj({"id": ID, "email": nullable(STR)})),
            "targetMember": nullable(ID),
            "ipAddress": nullable(STR),
            "data": ANY_OBJECT,
            "dateCreated": TIME,
        }
    ),
    "AuditPage": obj(
        {
            "rows": array(ref("AuditEntry")),
            "options": array({"enum": list(EVENTS)}),
        }
    ),
    "Webhook": obj(
        {
            "id": ID,
            "url": STR,
            "events": array(STR),
            "dateCreated": TIME,
            "secret": STR,  # only in the answer that creates it
        },
        optional=("secret",),
    ),
    "Delivery": obj(
        {
            "id": ID,
            "event": STR,
            "auditLogId": ID,
            "status": STR,
            "attempts": INT,
            "lastResponse": nullable(obj({"status": {"type": "integer"}, "body": STR})),
            "lastError": nullable(STR),
            "dateCreated": TIME,
            "nextAttemptAt": nullable(TIME),
            "deliveredAt": nullable(TIME),
        }
    ),
    "Invite": obj(
        {
            "orgSlug": STR,
            "orgName": STR,
            "email": STR,
            "role": ROLE,
            "needsAuthentication": BOOL,
            "needs2fa": BOOL,
            "require2FALevel": LEVEL,
            "existingMember": BOOL,
            "pendingReason": nullable(STR),
            "reinstateBy": nullable(TIME),
        }
    ),
    "Joined": obj({"orgSlug": STR, "memberId": ID, "redirect": STR}),
    "Health": obj(
        {
            "status": {"enum": ["ok", "unavailable"]},
            "checks": obj({"database": STR, "redis": STR}),
            "detail": STR,  # when unavailable
        },
        optional=("detail",),
    ),
}

# Enrolling answers the new factor, the first recovery codes and the "Join {org}" step of an
# invitation link the browser opened before (`api.invite_session`).
SHAPES["Enrolled"] = {
    **SHAPES["Authenticator"],
    "properties": {
        **SHAPES["Authenticator"]["properties"],
        "recoveryCodes": array(STR),
        "joinStep": ref("JoinStep"),
    },
}


@dataclass(frozen=True)
class Answer:
    """One documented answer: a schema (or a list of them, any of which) and its media type."""

    schema: Schema | None
    description: str
    media_type: str = "application/json"
    headers: tuple[str, ...] = ()  # response headers it always carries


def answer(name: str, description: str, **kwargs: Any) -> Answer:
    return Answer(ref(name), description, **kwargs)


def list_of(name: str, description: str, **kwargs: Any) -> Answer:
    return Answer(array(ref(name)), description, **kwargs)


NO_CONTENT = Answer(None, "Done; no body.")
PAGED = ("Link",)


@dataclass(frozen=True)
class Operation:
    success: dict[int, Answer | tuple[Answer, ...]]
    errors: tuple[int, ...]


# Error statuses by what the operation does (the sentences are CONTRACT §5's).
ERROR_TEXT = {
    400: "Invalid input: `detail`, and `errors` per field for a validation error.",
    401: "Not signed in, or the second factor, the organization's 2FA (`code`"
    ' "2fa-required") or a recent re-authentication (`code` "sudo-required") is missing.',
    403: "Not allowed (a role, a last factor, a cross-site request signed in by cookie).",
    404: "Unknown, or not visible to the caller.",
    409: "Conflicts with the current state.",
    410: "The link has expired.",
    413: "The request body is too large.",
    429: "Rate limited; `Retry-After` says when to try again.",
    503: "A dependency (the SMS gateway) is unavailable; try again later.",
}
SIGNED_IN = (400, 401)
WRITE = (400, 401, 403, 413)  # a body, and the CSRF check of cookie sessions
ORG_READ = (400, 401, 403, 404)
ORG_WRITE = (400, 401, 403, 404, 413)

API = "/api/0"
ORG = f"{API}/organizations/{{org}}"
ME = f"{API}/users/me"

OPERATIONS: dict[tuple[str, str], Operation] = {
    # Accounts
    ("POST", f"{API}/auth/register/"): Operation(
        {201: answer("User", "The new account, signed in.")}, (400, 403, 409, 413)
    ),
    ("POST", f"{API}/auth/login/"): Operation({200: answer("User", "Signed in.")}, (*WRITE, 429)),
    ("POST", f"{API}/auth/logout/"): Operation({204: NO_CONTENT}, (400, 403)),
    ("POST", f"{API}/auth/2fa/"): Operation({200: answer("User", "Signed in.")}, (*WRITE, 429)),
    ("POST", f"{API}/auth/2fa/sms/"): Operation(
        {200: answer("SmsSent", "A code was texted to the backup phone.")},
        (400, 401, 403, 429, 503),
    ),
    ("POST", f"{API}/auth/sudo/"): Operation(
        {200: answer("Sudo", "Sensitive changes are allowed until `sudoUntil`.")}, (*WRITE, 429)
    ),
    ("POST", f"{API}/auth/sudo/webauthn/"): Operation(
        {200: answer("WebauthnOptions", "A challenge for a security key.")}, WRITE
    ),
    ("POST", f"{API}/auth/2fa/webauthn/"): Operation(
        {200: answer("WebauthnOptions", "A challenge for a security key.")}, WRITE
    ),
    ("POST", f"{API}/api-tokens/"): Operation(
        {201: answer("NewApiToken", "The token, shown this once.")}, WRITE
    ),
    ("GET", f"{API}/api-tokens/"): Operation(
        {200: list_of("ApiToken", "The caller's tokens.")}, SIGNED_IN
    ),
    ("DELETE", f"{API}/api-tokens/{{id}}/"): Operation({204: NO_CONTENT}, (400, 401, 403, 404)),
    ("GET", f"{ME}/"): Operation({200: answer("User", "The caller.")}, SIGNED_IN),
    ("PUT", f"{ME}/password/"): Operation({204: NO_CONTENT}, (*WRITE, 429)),
    ("GET", f"{ME}/sessions/"): Operation(
        {200: list_of("Session", "The caller's sessions.")}, SIGNED_IN
    ),
    ("DELETE", f"{ME}/sessions/"): Operation({204: NO_CONTENT}, (400, 401, 403)),
    ("DELETE", f"{ME}/sessions/{{id}}/"): Operation({204: NO_CONTENT}, (400, 401, 403, 404)),
    # Second factors
    ("GET", f"{ME}/authenticators/"): Operation(
        {200: list_of("Authenticator", "The caller's confirmed factors.")}, SIGNED_IN
    ),
    ("POST", f"{ME}/authenticators/totp/enroll/"): Operation(
        {
            200: answer("TotpSecret", "`{}`: a new secret to confirm (nothing stored)."),
            201: answer("Enrolled", "`{secret, otp}`: the factor, confirmed."),
        },
        (*WRITE, 409, 429),
    ),
    ("POST", f"{ME}/authenticators/sms/enroll/"): Operation(
        {
            200: answer("SmsEnrollmentSent", "`{phone}`: a code was texted to the number."),
            201: answer("Enrolled", "`{phone, otp}`: the backup phone, confirmed."),
        },
        (*WRITE, 409, 429, 503),
    ),
    ("POST", f"{ME}/authenticators/webauthn/register/"): Operation(
        {
            200: answer("WebauthnOptions", "`{}`: creation options for a new key."),
            201: answer("Enrolled", "`{credential, name}`: the key, registered."),
        },
        (*WRITE, 409),
    ),
    ("POST", f"{ME}/authenticators/recovery/regenerate/"): Operation(
        {200: answer("RecoveryCodes", "A new set; the old one no longer works.")},
        (400, 401, 403),
    ),
    ("PUT", f"{ME}/authenticators/{{id}}/"): Operation(
        {200: answer("Authenticator", "The factor, renamed.")}, (*WRITE, 404)
    ),
    ("DELETE", f"{ME}/authenticators/{{id}}/"): Operation({204: NO_CONTENT}, (400, 401, 403, 404)),
    # Organizations and teams
    ("GET", f"{API}/organizations/"): Operation(
        {200: list_of("Organization", "The caller's organizations.")}, SIGNED_IN
    ),
    ("POST", f"{API}/organizations/"): Operation(
        {201: answer("Organization", "The new organization; the caller is its owner.")},
        (*WRITE, 409),
    ),
    ("GET", f"{ORG}/"): Operation({200: answer("Organization", "The organization.")}, ORG_READ),
    ("PUT", f"{ORG}/"): Operation(
        {200: answer("Organization", "The organization as changed.")}, (*ORG_WRITE, 409)
    ),
    ("GET", f"{ORG}/2fa-compliance/"): Operation(
        {
            200: (
                answer("Compliance", "Who would be removed now.", headers=PAGED),
                Answer(
                    {"type": "string"},
                    "`?format=csv`: one row per member.",
                    media_type="text/csv",
                ),
            )
        },
        ORG_READ,
    ),
    ("GET", f"{ORG}/2fa-enforcements/"): Operation(
        {200: list_of("Run", "The runs, newest first.", headers=PAGED)}, ORG_READ
    ),
    ("GET", f"{ORG}/2fa-enforcements/{{enforcement_id}}/"): Operation(
        {200: answer("Run", "One run's progress.")}, ORG_READ
    ),
    ("POST", f"{ORG}/2fa-reminders/"): Operation(
        {202: answer("Accepted", "The reminders are being queued.")}, ORG_READ
    ),
    ("GET", f"{ORG}/audit-logs/"): Operation(
        {200: answer("AuditPage", "Entries, newest first.", headers=PAGED)}, ORG_READ
    ),
    ("GET", f"{ORG}/teams/"): Operation({200: list_of("Team", "The teams.")}, ORG_READ),
    ("POST", f"{ORG}/teams/"): Operation({201: answer("Team", "The new team.")}, (*ORG_WRITE, 409)),
    # Members
    ("GET", f"{ORG}/members/"): Operation(
        {200: list_of("Member", "Members, by id.", headers=PAGED)}, ORG_READ
    ),
    ("POST", f"{ORG}/members/"): Operation(
        {201: answer("Member", "The invitation (a pending member).")}, (*ORG_WRITE, 409)
    ),
    ("GET", f"{ORG}/members/{{member_id}}/"): Operation(
        {200: answer("Member", "The member.")}, ORG_READ
    ),
    ("PUT", f"{ORG}/members/{{member_id}}/"): Operation(
        {200: answer("Member", "The member as changed.")}, (*ORG_WRITE, 409, 429)
    ),
    ("DELETE", f"{ORG}/members/{{member_id}}/"): Operation({204: NO_CONTENT}, (*ORG_READ, 409)),
    ("POST", f"{ORG}/members/{{member_id}}/reset-2fa/"): Operation(
        {200: answer("Reset2fa", "The member after the reset.")}, (*ORG_READ, 409)
    ),
    # Webhooks
    ("GET", f"{ORG}/webhooks/"): Operation(
        {200: list_of("Webhook", "The webhooks, without secrets.")}, ORG_READ
    ),
    ("POST", f"{ORG}/webhooks/"): Operation(
        {201: answer("Webhook", "The webhook with its secret, shown this once.")}, ORG_WRITE
    ),
    ("GET", f"{ORG}/webhooks/{{webhook_id}}/"): Operation(
        {200: answer("Webhook", "The webhook, without its secret.")}, ORG_READ
    ),
    ("DELETE", f"{ORG}/webhooks/{{webhook_id}}/"): Operation({204: NO_CONTENT}, ORG_READ),
    ("GET", f"{ORG}/webhooks/{{webhook_id}}/deliveries/"): Operation(
        {200: list_of("Delivery", "Deliveries, newest first.", headers=PAGED)}, ORG_READ
    ),
    # Invitations
    ("GET", f"{API}/accept-invite/{{member_id}}/{{token}}/"): Operation(
        {200: answer("Invite", "What accepting the link still needs.")},
        (400, 401, 403, 410, 429),
    ),
    ("POST", f"{API}/accept-invite/{{member_id}}/{{token}}/"): Operation(
        {200: answer("Joined", "Joined the organization.")}, (400, 401, 403, 409, 410, 429)
    ),
    # Operations
    ("GET", "/healthz"): Operation(
        {
            200: answer("Health", "PostgreSQL and Redis answer."),
            503: answer("Health", "A dependency does not answer; `checks` says which."),
        },
        (400,),
    ),
    ("GET", "/metrics"): Operation(
        {
            200: Answer(
                {"type": "string"},
                "Prometheus' text exposition format (version 0.0.4).",
                media_type="text/plain",
            )
        },
        (400,),
    ),
}

# Query parameters, by operation.
CURSOR: list[Schema] = [
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The `cursor` of the `Link` header's next page.",
        "schema": STR,
    },
    {
        "name": "per_page",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
]
QUERY: dict[tuple[str, str], list[Schema]] = {
    ("GET", f"{ORG}/members/"): [
        {
            "name": "query",
            "in": "query",
            "required": False,
            "description": "Terms: `has2fa:true|false`, `is:pending|active|exempt|noncompliant`,"
            " `role:X`, and words of a name or email.",
            "schema": STR,
            "example": "has2fa:false",
        },
        *CURSOR,
    ],
    ("GET", f"{ORG}/2fa-compliance/"): [
        {"name": "format", "in": "query", "required": False, "schema": {"enum": ["json", "csv"]}},
        *CURSOR,
    ],
    ("GET", f"{ORG}/2fa-enforcements/"): CURSOR,
    ("GET", f"{ORG}/audit-logs/"): [
        {"name": "event", "in": "query", "required": False, "schema": {"enum": list(EVENTS)}},
        *CURSOR,
    ],
    ("GET", f"{ORG}/webhooks/{{webhook_id}}/deliveries/"): CURSOR,
}
# Operations that answer without being signed in (or with either).
ANONYMOUS = frozenset(
    {
        ("POST", f"{API}/auth/register/"),
        ("POST", f"{API}/auth/login/"),
        ("POST", f"{API}/auth/logout/"),
        ("GET", f"{API}/accept-invite/{{member_id}}/{{token}}/"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    }
)
