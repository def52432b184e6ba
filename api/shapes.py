"""The JSON shapes the API answers, each written once as a typed model.

The request bodies are pydantic models (`api.bodies`, the handlers' `…In` classes); so are the
answers: one library describes both what comes in and what goes out. An answer's model is a
`TypedDict` (pydantic's typed model for a plain dict) whose keys are the JSON keys:
- the JSON Schema of `openapi.json`'s components is derived from it (`components`, in
  serialization mode): its keys are the properties, the ones not `NotRequired` are required,
  `extra="forbid"` closes it (`additionalProperties: false`), `X | None` is nullable;
- the answer is an instance of it (`api.serializers` builds them from rows), encoded by orjson
  (`api.jsonio`): mypy (`make lint`) refuses a key the model lacks and a required key missing,
  so a key cannot be added to the answer and not to the document, or the other way round.
Times are `datetime`s (orjson writes them as `isoformat()` does); ids are strings of digits.
A plain dict is the fastest form to build and encode (`BaseModel.model_construct` made the
members list's body about four times slower: bench/serialize.py). `api/answers.py` says which
model each operation answers.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, Literal, NotRequired

from pydantic import TypeAdapter, with_config

# pydantic reads TypedDicts from typing_extensions on Python 3.11.
from typing_extensions import TypedDict, is_typeddict

from api.shape_kinds import (
    CLOSED,
    AnyObject,
    Count,
    Event,
    FactorType,
    Id,
    Level,
    Role,
    RunStatus,
)
from api.sso_shapes import SsoConfig, SsoLink  # noqa: F401  (re-exported: answers, members)
from api.webhook_shapes import (  # noqa: F401  (re-exported: answers, serializers)
    Delivery,
    LastResponse,
    QueuedDelivery,
    Webhook,
    WebhookSecret,
)

REF = "#/components/schemas/{model}"

# Keys that are not Python names ("2faRequired"): the functional form.
Error = TypedDict(
    "Error",
    {
        "detail": str,
        "errors": NotRequired[dict[str, list[str]]],
        # Clients act on these: `2fa-required`, `sudo-required`.
        "code": NotRequired[Literal["2fa-required", "sudo-required"]],
        "requestId": NotRequired[str],  # a 500's, to find it in the logs
        # The password was right; a second factor is needed (`auth/login/`, `auth/2fa/`).
        "2faRequired": NotRequired[bool],
        "interfaces": NotRequired[list[FactorType]],
        "smsSent": NotRequired[bool],
        "require2FALevel": NotRequired[Level],
    },
)
with_config(CLOSED)(Error)


@with_config(CLOSED)
class User(TypedDict):
    id: Id
    email: str
    name: str
    has2fa: bool
    isSuperuser: bool
    dateJoined: datetime


@with_config(CLOSED)
class ApiToken(TypedDict):
    id: Id
    name: str
    dateCreated: datetime
    lastUsedAt: datetime | None


@with_config(CLOSED)
class NewApiToken(TypedDict):
    id: Id
    token: str
    name: str


@with_config(CLOSED)
class Session(TypedDict):
    id: Id
    current: bool
    createdAt: datetime
    lastSeenAt: datetime
    ipAddress: str | None
    userAgent: str | None


@with_config(CLOSED)
class Sudo(TypedDict):
    sudoUntil: datetime


@with_config(CLOSED)
class SmsSent(TypedDict):
    sent: bool
    phone: str


@with_config(CLOSED)
class SmsEnrollmentSent(TypedDict):
    phone: str
    sent: bool
    expiresIn: Count


@with_config(CLOSED)
class WebauthnOptions(TypedDict):
    publicKey: AnyObject


@with_config(CLOSED)
class TotpSecret(TypedDict):
    secret: str
    otpauthUrl: str
    qrcode: str


@with_config(CLOSED)
class Authenticator(TypedDict):
    id: Id
    type: FactorType
    name: str
    createdAt: datetime
    lastUsedAt: datetime | None
    phone: NotRequired[str]  # backup phones, masked
    unusedCodes: NotRequired[Count]  # recovery codes


@with_config(CLOSED)
class JoinStep(TypedDict):
    orgSlug: str
    orgName: str
    email: str
    memberId: Id
    pendingReason: str | None
    acceptPath: str


@with_config(CLOSED)
class Enrolled(Authenticator):
    """The new factor, the first recovery codes and the "Join {org}" step of an invitation link
    the browser opened before (`api.invite_session`)."""

    recoveryCodes: NotRequired[list[str]]
    joinStep: NotRequired[JoinStep]


@with_config(CLOSED)
class RecoveryCodes(TypedDict):
    recoveryCodes: list[str]


@with_config(CLOSED)
class RunBrief(TypedDict):
    id: Id
    status: RunStatus
    enforceAt: NotRequired[datetime]


@with_config(CLOSED)
class Organization(TypedDict):
    id: Id
    slug: str
    name: str
    require2FA: bool
    require2FALevel: Level
    ssoEnabled: bool
    # A scheduled requirement: when it starts (`require2FA` stays false until then).
    enforceAt: datetime | None
    require2FAScope: dict[Literal["roles", "teams"], list[str]] | None  # null: everyone
    require2FAAction: Literal["remove", "block"]
    dateCreated: datetime
    role: Role  # the caller's
    enforcement: NotRequired[RunBrief]  # PUT, when it turned the requirement on


@with_config(CLOSED)
class Team(TypedDict):
    id: Id
    slug: str
    name: str
    memberCount: Count
    dateCreated: datetime


@with_config(CLOSED)
class Someone(TypedDict):
    """Who did it: a user's id (None once deleted) and the name or label recorded."""

    id: Id | None
    name: str | None


@with_config(CLOSED)
class Exemption(TypedDict):
    reason: str
    until: datetime
    by: Someone


@with_config(CLOSED)
class MemberUser(TypedDict):
    id: Id
    email: str
    name: str
    has2fa: bool
    meetsRequirement: bool


@with_config(CLOSED)
class Member(TypedDict):
    id: Id
    email: str
    name: str
    role: Role
    teams: list[str]
    settings: AnyObject | None
    pending: bool
    # Removed for 2FA: `2fa` (no second factor) or `2fa-level` (none the level accepts).
    pendingReason: str | None
    reinstateBy: datetime | None
    lastRemindedAt: datetime | None
    exempt2FA: Exemption | None
    blocked: bool  # by `require2FAAction` block, until they meet the requirement
    dateCreated: datetime
    user: MemberUser | None
    sso: SsoLink | None  # null when not linked to the organization's identity provider


@with_config(CLOSED)
class Reset2fa(TypedDict):
    member: Member
    deletedFactors: list[FactorType]
    removed: bool


@with_config(CLOSED)
class Compliance(TypedDict):
    count: Count
    members: list[Member]


@with_config(CLOSED)
class Run(TypedDict):
    id: Id
    status: RunStatus
    total: Count | None
    removed: Count
    skipped: Count
    batchesTotal: Count | None
    batchesDone: Count
    emailsQueued: Count
    emailsSent: Count
    actor: Someone
    dateCreated: datetime
    startedAt: datetime | None
    finishedAt: datetime | None
    error: str | None  # why a `failed` run stopped
    enforceAt: datetime | None  # a run on a date: when it starts


@with_config(CLOSED)
class Accepted(TypedDict):
    detail: str


@with_config(CLOSED)
class AuditActor(TypedDict):
    type: Literal["user", "system"]
    id: Id | None
    email: str | None
    name: str | None
    tokenId: Id | None


@with_config(CLOSED)
class TargetUser(TypedDict):
    id: Id
    email: str | None


@with_config(CLOSED)
class AuditEntry(TypedDict):
    id: Id
    event: Event
    actor: AuditActor | None
    actorLabel: str | None
    targetUser: TargetUser | None
    targetMember: Id | None
    ipAddress: str | None
    data: AnyObject
    dateCreated: datetime


@with_config(CLOSED)
class AuditPage(TypedDict):
    rows: list[AuditEntry]
    options: list[Event]


@with_config(CLOSED)
class Invite(TypedDict):
    orgSlug: str
    orgName: str
    email: str
    role: Role
    needsAuthentication: bool
    needs2fa: bool
    require2FALevel: Level
    existingMember: bool
    pendingReason: str | None
    reinstateBy: datetime | None


@with_config(CLOSED)
class Joined(TypedDict):
    orgSlug: str
    memberId: Id
    redirect: str


@with_config(CLOSED)
class Checks(TypedDict):
    database: str
    redis: str


@with_config(CLOSED)
class Health(TypedDict):
    status: Literal["ok", "unavailable"]
    checks: Checks
    detail: NotRequired[str]  # when unavailable


@cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def checked(model: Any, value: Any) -> Any:
    """`value` (a dict the domain wrote) validated against `model`: the answer then has the
    model's keys and types, or this raises (a domain change the model does not follow)."""
    return _adapter(model).validate_python(value, strict=False)


def schema_of(shape: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of `shape` (a model, a list of one, `str`) in serialization mode (the
    schema of what is written): each model it holds is filed in `components` by name, and
    referenced."""
    schema = _adapter(shape).json_schema(ref_template=REF, mode="serialization")
    for name, each in schema.pop("$defs", {}).items():
        file(components, name, each)
    if not is_typeddict(shape):
        return schema
    file(components, shape.__name__, schema)
    return {"$ref": REF.format(model=shape.__name__)}


def file(components: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """Files `schema` under `name`; two different schemas under one name are a mistake."""
    if components.setdefault(name, schema) != schema:
        raise ValueError(f"two schemas are named {name}")
