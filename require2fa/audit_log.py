"""Reading an organization's audit log (`db.audit.EVENTS`): newest first, filtered by event,
actor, target and dates; each entry said in words (`describe`, for the page and the CSV alike),
and the CSV export."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from db import audit
from require2fa.errors import Invalid

EVENTS = audit.EVENTS
EXPORT_CHUNK = 1000  # entries read per statement while exporting


@dataclass(frozen=True)
class AuditFilter:
    event: str | None = None
    actor: str | None = None  # part of the actor's email, name or label
    target: str | None = None  # part of the target's email
    since: datetime | None = None
    until: datetime | None = None  # exclusive


# A page's cursor: the (time, id) of the last entry of the page before, so that the next page
# reads only the month partitions its times fall in. The form is ours (`cursor_text`); an entry's
# id alone (the cursors of before) is still taken.
Cursor = audit.Position
_CURSOR = re.compile(r"(\d{1,19})\.(\d{1,19})")
_OLD_CURSOR = re.compile(r"(\d{1,19})(:.*)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_MICROS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
MAX_ID = 2**63 - 1
# Months read one statement each, from the newest a page may hold, before one statement reads
# all the older ones (an organization whose entries are few and far apart).
MONTHS_ONE_BY_ONE = 3


def cursor_text(cursor: Cursor) -> str:
    micros = (cursor.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{cursor.id}"


def cursor_of(row: Mapping[str, Any]) -> Cursor:
    """The cursor of the page after the one `row` ends."""
    return Cursor(row["created_at"], row["id"])


def parse_cursor(text: str) -> Cursor | int | None:
    """`cursor_text`'s cursor, or an entry id (a cursor of before); None for none; `Invalid`
    otherwise."""
    if not text:
        return None
    if found := _CURSOR.fullmatch(text):
        micros, entry_id = int(found[1]), int(found[2])
        if micros <= _LAST_MICROS and entry_id <= MAX_ID:
            return Cursor(_EPOCH + timedelta(microseconds=micros), entry_id)
    elif (old := _OLD_CURSOR.fullmatch(text)) and int(old[1]) <= MAX_ID:
        return int(old[1])
    raise Invalid("invalid-cursor", "Invalid cursor.", field="cursor", summary="Invalid cursor.")


def _month(moment: datetime) -> datetime:
    """The first instant (UTC) of `moment`'s month, the way the partitions are cut."""
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _previous_month(month: datetime) -> datetime:
    return _month(month - timedelta(days=1))


async def page(
    pool: asyncpg.Pool,
    org_id: int,
    *,
    cursor: Cursor | int | None,
    limit: int,
    where: AuditFilter | None = None,
) -> list[asyncpg.Record]:
    """Up to `limit` entries after `cursor`, newest first, of what `where` asks; `Invalid` (on
    `event`) for an event that does not exist. An id `cursor` whose entry is gone (its month
    dropped) has nothing after it.

    The entries are read month by month, from the one holding the cursor (or `until`, or now):
    each statement bounds `created_at` to one month partition, and the next month is read only
    when the page is not full yet; after `MONTHS_ONE_BY_ONE` months, one statement reads all the
    older ones."""
    where = where or AuditFilter()
    if where.event is not None and where.event not in audit.EVENTS:
        unknown = f"Unknown event: {where.event[:100]}"
        raise Invalid("unknown-event", unknown, field="event", summary=unknown)
    async with pool.acquire() as conn:
        if isinstance(cursor, int):
            cursor = await audit.position_of(conn, organization_id=org_id, entry_id=cursor)
            if cursor is None:
                return []
        # `(until, 0)`: before any entry at `until` (ids start at 1).
        before = min(
            (b for b in (cursor, where.until and Cursor(where.until, 0)) if b),
            key=lambda b: (b.created_at, b.id),
            default=None,
        )
        since = where.since
        rows: list[asyncpg.Record] = []
        month = _month(before.created_at if before else datetime.now(UTC))
        for step in range(MONTHS_ONE_BY_ONE + 1):
            last = step == MONTHS_ONE_BY_ONE or (since is not None and since >= month)
            rows += await audit.page(
                conn,
                organization_id=org_id,
                limit=limit - len(rows),
                event=where.event,
                since=since if last else month,
                before=before,
                actor=where.actor,
                target=where.target,
            )
            if last or len(rows) >= limit:
                return rows
            before, month = Cursor(month, 0), _previous_month(month)
    return rows


async def export(
    pool: asyncpg.Pool,
    org_id: int,
    where: AuditFilter,
    write: Callable[[bytes], Awaitable[object]],
) -> None:
    """Every entry `where` selects, newest first, as CSV (a header, then when, event, actor,
    target, IP address, the entry in words, its data as JSON) handed to `write` in chunks."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date", "event", "actor", "target", "ip_address", "description", "data"])
    cursor: Cursor | None = None
    while True:
        rows = await page(pool, org_id, cursor=cursor, limit=EXPORT_CHUNK, where=where)
        for row in rows:
            data = _data(row)
            writer.writerow(
                [
                    row["created_at"].astimezone(UTC).isoformat(),
                    row["event"],
                    actor_name(row),
                    data.get("email") or "",
                    row["ip_address"] or "",
                    describe(row),
                    json.dumps(data, sort_keys=True),
                ]
            )
        await write(out.getvalue().encode())
        out.seek(0)
        out.truncate()
        if len(rows) < EXPORT_CHUNK:
            return
        cursor = cursor_of(rows[-1])


# --- An entry in words (the audit-log page and its CSV) ----------------------------------------


def _data(row: Mapping[str, Any]) -> dict[str, Any]:
    data = row["data"]
    return data if isinstance(data, dict) else {}


def actor_name(row: Mapping[str, Any]) -> str:
    """Who did it, as a person reads it: the user's name, else their email, else the label."""
    return row["actor_name"] or row["actor_email"] or row["actor_label"] or "require2fa"


def _day(value: str) -> str:
    """`14 January 2027` of an ISO 8601 time (UTC)."""
    try:
        moment = datetime.fromisoformat(value).astimezone(UTC)
    except (TypeError, ValueError):
        return str(value)
    return f"{moment.day} {moment:%B %Y}"


def _to(value: Any) -> str:
    """`"to True"` (how `org.edit` records a new value) → `True`."""
    text = str(value)
    return text[3:] if text.startswith("to ") else text


def _org_edit(data: Mapping[str, Any]) -> list[str]:
    said = []
    required = data.get("require_2fa")
    if required == "to True" and data.get("enforce_at"):
        said.append(f"scheduled the requirement for {_day(data['enforce_at'])}")
    elif required == "to True":
        said.append("turned on the requirement")
    elif required == "to False" and data.get("schedule") == "cancelled":
        said.append("cancelled the scheduled requirement")
    elif required == "to False":
        said.append("turned off the requirement")
    if "require_2fa_level" in data:
        said.append(f"set the requirement level to {_to(data['require_2fa_level'])}")
    if "name" in data:
        said.append(f"renamed the organization to {_to(data['name'])}")
    if "sso_enabled" in data:
        said.append(
            "turned on single sign-on"
            if _to(data["sso_enabled"]) == "True"
            else "turned off single sign-on"
        )
    return said or ["changed the organization's settings"]


def _member_accept(_who: str, email: str, data: Mapping[str, Any]) -> str:
    if data.get("via") == "2fa":
        return f"{email} came back after setting up two-factor authentication"
    return f"{email} joined as {data.get('role', 'member')}"


def _member_remove(who: str, email: str, data: Mapping[str, Any]) -> str:
    if data.get("reason") == "2fa-window-expired":
        return f"The pending membership of {email} expired"
    return f"{who} removed {email}"


def _member_edit(who: str, email: str, data: Mapping[str, Any]) -> str:
    if "role" in data:
        return f"{who} changed the role of {email} to {data['role']}"
    if "teams" in data:
        return f"{who} changed the teams of {email}"
    return f"{who} changed the notification settings of {email}"


def _member_exempt(who: str, email: str, data: Mapping[str, Any]) -> str:
    exemption = data.get("exempt2FA")
    if isinstance(exemption, dict):
        until = _day(exemption.get("until", ""))
        said = f"{who} exempted {email} from two-factor authentication until {until}"
        return said + (f" (reason: {exemption['reason']})" if exemption.get("reason") else "")
    if data.get("lapsed"):
        return f"The exemption of {email} from two-factor authentication ended"
    return f"{who} lifted the exemption of {email} from two-factor authentication"


def _org_edit_said(who: str, _email: str, data: Mapping[str, Any]) -> str:
    said = f"{who} {' and '.join(_org_edit(data))}"
    return said + (f" (reason: {data['reason']})" if data.get("reason") else "")


Say = Callable[[str, str, Mapping[str, Any]], str]
_SAY: dict[str, Say] = {
    "org.edit": _org_edit_said,
    "member.invite": lambda who, email, d: f"{who} invited {email} as {d.get('role', 'member')}",
    "member.accept": _member_accept,
    "member.pending": lambda who, email, _d: (
        f"{who} removed {email} until they set up two-factor authentication"
    ),
    "member.reinvite": lambda who, email, _d: f"{who} sent the email to {email} again",
    "member.remove": _member_remove,
    "member.edit": _member_edit,
    "member.2fa-reset": lambda who, email, _d: (
        f"{who} reset the two-factor authentication of {email}"
    ),
    "member.2fa-exempt": _member_exempt,
    "member.sso-link": lambda _who, email, _d: f"{email} linked their single sign-on identity",
    "org.sso-edit": lambda who, _email, _d: f"{who} changed the single sign-on settings",
    "webhook.create": lambda who, _email, d: f"{who} added a webhook to {_host(d)}",
    "webhook.delete": lambda who, _email, d: f"{who} deleted the webhook to {_host(d)}",
    "webhook.edit": lambda who, _email, d: f"{who} changed webhook {d.get('id', '')}",
    "webhook.rotate-secret": lambda who, _email, d: (
        f"{who} rotated the secret of webhook {d.get('id', '')}"
    ),
    "webhook.disable": lambda who, _email, d: (
        f"{who} turned off the webhook to {_host(d)} ({d.get('reason', 'disabled')})"
    ),
}


def _host(data: Mapping[str, Any]) -> str:
    """The receiver an entry names (its host, or the whole URL in older entries)."""
    return str(data.get("host") or data.get("url") or "a receiver")


def describe(row: Mapping[str, Any]) -> str:
    """One sentence for an entry: "Olive Owner turned on the requirement.", "… scheduled the
    requirement for 14 January 2027." `row` has the entry's columns, `actor_email`, `actor_name`."""
    data = _data(row)
    say = _SAY.get(row["event"])
    who = actor_name(row)
    if say is None:
        return f"{who}: {row['event']}."
    return say(who, data.get("email") or "a member", data) + "."


# --- An entry as JSON (the audit-log API and the webhooks' bodies) ---------------------------


def actor_json(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """`{type, id, email, name, tokenId}` of the entry's actor (a user, or the system under a
    label), or None. `row` has the entry's columns and `actor_email`, `actor_name`."""
    if row["actor_user_id"] is None and not row["actor_label"]:
        return None
    return {
        "type": "user" if row["actor_user_id"] is not None else "system",
        "id": str(row["actor_user_id"]) if row["actor_user_id"] is not None else None,
        "email": row["actor_email"],
        "name": row["actor_name"] or row["actor_label"],
        "tokenId": str(row["actor_token_id"]) if row["actor_token_id"] is not None else None,
    }


def target_user_json(row: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any] | None:
    """`{id, email}` of the entry's target user (the email as the entry's data recorded it)."""
    if row["target_user_id"] is None:
        return None
    return {"id": str(row["target_user_id"]), "email": data.get("email")}
