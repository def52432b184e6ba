"""What each operation of the API answers: its success statuses with their bodies (the models of
`api/shapes.py`, by name), the error statuses it can give (an `Error`), its query parameters, and
which operations answer without being signed in (`openapi.json`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api import shapes
from db.audit import EVENTS

Schema = dict[str, Any]
STR: Schema = {"type": "string"}


@dataclass(frozen=True)
class Answer:
    """One documented answer: the shape of its body (a model of `api.shapes`, a list of one,
    or `str` for text) and its media type."""

    shape: Any
    description: str
    media_type: str = "application/json"
    headers: tuple[str, ...] = ()  # response headers it always carries


def answer(model: Any, description: str, **kwargs: Any) -> Answer:
    return Answer(model, description, **kwargs)


def list_of(model: Any, description: str, **kwargs: Any) -> Answer:
    return Answer(list[model], description, **kwargs)


NO_CONTENT = Answer(None, "Done; no body.")
PAGED = ("Link",)


@dataclass(frozen=True)
class Operation:
    success: dict[int, Answer | tuple[Answer, ...]]
    errors: tuple[int, ...]


# Error statuses by what the operation does, with the description `openapi.json` gives each.
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
        {201: answer(shapes.User, "The new account, signed in.")}, (400, 403, 409, 413, 429)
    ),
    ("POST", f"{API}/auth/login/"): Operation(
        {200: answer(shapes.User, "Signed in.")}, (*WRITE, 429)
    ),
    ("POST", f"{API}/auth/logout/"): Operation({204: NO_CONTENT}, (400, 403)),
    ("POST", f"{API}/auth/2fa/"): Operation(
        {200: answer(shapes.User, "Signed in.")}, (*WRITE, 429)
    ),
    ("POST", f"{API}/auth/2fa/sms/"): Operation(
        {200: answer(shapes.SmsSent, "A code was texted to the backup phone.")},
        (400, 401, 403, 429, 503),
    ),
    ("POST", f"{API}/auth/sudo/"): Operation(
        {200: answer(shapes.Sudo, "Sensitive changes are allowed until `sudoUntil`.")},
        (*WRITE, 429),
    ),
    ("POST", f"{API}/auth/sudo/webauthn/"): Operation(
        {200: answer(shapes.WebauthnOptions, "A challenge for a security key.")}, WRITE
    ),
    ("POST", f"{API}/auth/2fa/webauthn/"): Operation(
        {200: answer(shapes.WebauthnOptions, "A challenge for a security key.")}, WRITE
    ),
    ("POST", f"{API}/api-tokens/"): Operation(
        {201: answer(shapes.NewApiToken, "The token, shown this once.")}, WRITE
    ),
    ("GET", f"{API}/api-tokens/"): Operation(
        {200: list_of(shapes.ApiToken, "The caller's tokens.")}, SIGNED_IN
    ),
    ("DELETE", f"{API}/api-tokens/{{id}}/"): Operation({204: NO_CONTENT}, (400, 401, 403, 404)),
    ("GET", f"{ME}/"): Operation({200: answer(shapes.User, "The caller.")}, SIGNED_IN),
    ("PUT", f"{ME}/password/"): Operation({204: NO_CONTENT}, (*WRITE, 429)),
    ("GET", f"{ME}/sessions/"): Operation(
        {200: list_of(shapes.Session, "The caller's sessions.")}, SIGNED_IN
    ),
    ("DELETE", f"{ME}/sessions/"): Operation({204: NO_CONTENT}, (400, 401, 403)),
    ("DELETE", f"{ME}/sessions/{{id}}/"): Operation({204: NO_CONTENT}, (400, 401, 403, 404)),
    # Second factors
    ("GET", f"{ME}/authenticators/"): Operation(
        {200: list_of(shapes.Authenticator, "The caller's confirmed factors.")}, SIGNED_IN
    ),
    ("POST", f"{ME}/authenticators/totp/enroll/"): Operation(
        {
            200: answer(shapes.TotpSecret, "`{}`: a new secret to confirm (nothing stored)."),
            201: answer(shapes.Enrolled, "`{secret, otp}`: the factor, confirmed."),
        },
        (*WRITE, 409, 429),
    ),
    ("POST", f"{ME}/authenticators/sms/enroll/"): Operation(
        {
            200: answer(shapes.SmsEnrollmentSent, "`{phone}`: a code was texted to the number."),
            201: answer(shapes.Enrolled, "`{phone, otp}`: the backup phone, confirmed."),
        },
        (*WRITE, 409, 429, 503),
    ),
    ("POST", f"{ME}/authenticators/webauthn/register/"): Operation(
        {
            200: answer(shapes.WebauthnOptions, "`{}`: creation options for a new key."),
            201: answer(shapes.Enrolled, "`{credential, name}`: the key, registered."),
        },
        (*WRITE, 409),
    ),
    ("POST", f"{ME}/authenticators/recovery/regenerate/"): Operation(
        {200: answer(shapes.RecoveryCodes, "A new set; the old one no longer works.")},
        (400, 401, 403),
    ),
    ("PUT", f"{ME}/authenticators/{{id}}/"): Operation(
        {200: answer(shapes.Authenticator, "The factor, renamed.")}, (*WRITE, 404)
    ),
    ("DELETE", f"{ME}/authenticators/{{id}}/"): Operation({204: NO_CONTENT}, (400, 401, 403, 404)),
    # Organizations and teams
    ("GET", f"{API}/organizations/"): Operation(
        {200: list_of(shapes.Organization, "The caller's organizations.")}, SIGNED_IN
    ),
    ("POST", f"{API}/organizations/"): Operation(
        {201: answer(shapes.Organization, "The new organization; the caller is its owner.")},
        (*WRITE, 409),
    ),
    ("GET", f"{ORG}/"): Operation(
        {200: answer(shapes.Organization, "The organization.")}, ORG_READ
    ),
    ("PUT", f"{ORG}/"): Operation(
        {200: answer(shapes.Organization, "The organization as changed.")}, (*ORG_WRITE, 409)
    ),
    ("GET", f"{ORG}/2fa-compliance/"): Operation(
        {
            200: (
                answer(shapes.Compliance, "Who would be removed now.", headers=PAGED),
                Answer(
                    str,
                    "`?format=csv`: one row per member.",
                    media_type="text/csv",
                ),
            )
        },
        ORG_READ,
    ),
    ("GET", f"{ORG}/2fa-enforcements/"): Operation(
        {200: list_of(shapes.Run, "The runs, newest first.", headers=PAGED)}, ORG_READ
    ),
    ("GET", f"{ORG}/2fa-enforcements/{{enforcement_id}}/"): Operation(
        {200: answer(shapes.Run, "One run's progress.")}, ORG_READ
    ),
    ("POST", f"{ORG}/2fa-reminders/"): Operation(
        {202: answer(shapes.Accepted, "The reminders are being queued.")}, ORG_READ
    ),
    ("GET", f"{ORG}/audit-logs/"): Operation(
        {200: answer(shapes.AuditPage, "Entries, newest first.", headers=PAGED)}, ORG_READ
    ),
    ("GET", f"{ORG}/teams/"): Operation({200: list_of(shapes.Team, "The teams.")}, ORG_READ),
    ("POST", f"{ORG}/teams/"): Operation(
        {201: answer(shapes.Team, "The new team.")}, (*ORG_WRITE, 409)
    ),
    # Members
    ("GET", f"{ORG}/members/"): Operation(
        {200: list_of(shapes.Member, "Members, by id.", headers=PAGED)}, ORG_READ
    ),
    ("POST", f"{ORG}/members/"): Operation(
        {201: answer(shapes.Member, "The invitation (a pending member).")}, (*ORG_WRITE, 409, 429)
    ),
    ("GET", f"{ORG}/members/{{member_id}}/"): Operation(
        {200: answer(shapes.Member, "The member.")}, ORG_READ
    ),
    ("PUT", f"{ORG}/members/{{member_id}}/"): Operation(
        {200: answer(shapes.Member, "The member as changed.")}, (*ORG_WRITE, 409, 429)
    ),
    ("DELETE", f"{ORG}/members/{{member_id}}/"): Operation({204: NO_CONTENT}, (*ORG_READ, 409)),
    ("POST", f"{ORG}/members/{{member_id}}/reset-2fa/"): Operation(
        {200: answer(shapes.Reset2fa, "The member after the reset.")}, (*ORG_READ, 409)
    ),
    # Webhooks
    ("GET", f"{ORG}/webhooks/"): Operation(
        {200: list_of(shapes.Webhook, "The webhooks, without secrets.")}, ORG_READ
    ),
    ("POST", f"{ORG}/webhooks/"): Operation(
        {201: answer(shapes.Webhook, "The webhook with its secret, shown this once.")},
        (*ORG_WRITE, 409),
    ),
    ("GET", f"{ORG}/webhooks/{{webhook_id}}/"): Operation(
        {200: answer(shapes.Webhook, "The webhook, without its secret.")}, ORG_READ
    ),
    ("PUT", f"{ORG}/webhooks/{{webhook_id}}/"): Operation(
        {200: answer(shapes.Webhook, "The webhook as changed, without its secret.")}, ORG_WRITE
    ),
    ("DELETE", f"{ORG}/webhooks/{{webhook_id}}/"): Operation({204: NO_CONTENT}, ORG_READ),
    ("POST", f"{ORG}/webhooks/{{webhook_id}}/ping/"): Operation(
        {202: answer(shapes.QueuedDelivery, "A `ping` delivery is queued.")}, (*ORG_WRITE, 409)
    ),
    ("POST", f"{ORG}/webhooks/{{webhook_id}}/rotate-secret/"): Operation(
        {200: answer(shapes.WebhookSecret, "The new secret, shown this once.")}, ORG_WRITE
    ),
    ("GET", f"{ORG}/webhooks/{{webhook_id}}/deliveries/"): Operation(
        {200: list_of(shapes.Delivery, "Deliveries, newest first.", headers=PAGED)}, ORG_READ
    ),
    ("POST", f"{ORG}/webhooks/{{webhook_id}}/deliveries/{{delivery_id}}/redeliver/"): Operation(
        {202: answer(shapes.QueuedDelivery, "The delivery is queued again, with its id.")},
        (*ORG_WRITE, 409),
    ),
    # Single sign-on
    ("GET", f"{ORG}/sso/"): Operation(
        {200: answer(shapes.SsoConfig, "The identity provider, without its secret.")}, ORG_READ
    ),
    ("PUT", f"{ORG}/sso/"): Operation(
        {200: answer(shapes.SsoConfig, "Saved, its discovery document read.")},
        (*ORG_WRITE, 409),  # an email domain another organization lists
    ),
    ("DELETE", f"{ORG}/sso/"): Operation({204: NO_CONTENT}, ORG_READ),
    # Invitations
    ("GET", f"{API}/accept-invite/{{member_id}}/{{token}}/"): Operation(
        {200: answer(shapes.Invite, "What accepting the link still needs.")},
        (400, 401, 403, 410, 429),
    ),
    ("POST", f"{API}/accept-invite/{{member_id}}/{{token}}/"): Operation(
        {200: answer(shapes.Joined, "Joined the organization.")}, (400, 401, 403, 409, 410, 429)
    ),
    # Operations
    ("GET", "/healthz"): Operation(
        {
            200: answer(shapes.Health, "PostgreSQL and Redis answer."),
            503: answer(shapes.Health, "A dependency does not answer; `checks` says which."),
        },
        (400,),
    ),
    ("GET", "/metrics"): Operation(
        {
            200: Answer(
                str,
                "Prometheus' text exposition format (version 0.0.4).",
                media_type="text/plain",
            )
        },
        # 401 without `Bearer $METRICS_TOKEN`; 404 outside development when none is set.
        (400, 401, 404),
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
            "description": "Terms: `has2fa:true|false`,"
            " `is:pending|active|exempt|blocked|noncompliant`, `role:X`, and words of a name or"
            " email.",
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
