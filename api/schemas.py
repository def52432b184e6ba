"""The JSON shapes the API answers, as JSON Schema (`openapi.json`'s components);
what each operation answers with them is in `api/answers.py`.

Each shape lists every key its serializer writes, all required, no others: a key added to or
dropped from a serializer without its schema fails `tests/security/test_openapi.py` and the
fuzzing of `tests/security/test_api_fuzz.py`, which checks every answer against this document.
"""

from __future__ import annotations

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
