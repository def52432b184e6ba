"""The audit log page in words: what each entry says, the filters by event, actor, target and
dates, and the CSV of the same selection with the same sentences."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from db import audit
from tests.factories import add_member, create_user, owner_and_org, sign_in

AUDIT = "/organizations/acme/audit-log/"


async def test_entries_in_words_filtered_and_exported(client, pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", name="Olive Owner")
    alice_id = await add_member(pool, org["id"], await create_user(pool, "alice@example.com"))
    olive = audit.Actor(user_id=owner["id"], label="owner@example.com")
    async with pool.acquire() as conn:
        for data in (
            {"require_2fa": "to True", "enforce_at": "2027-01-14T09:00:00+00:00"},
            {"require_2fa": "to False", "schedule": "cancelled"},
            {"require_2fa": "to True"},
            {"require_2fa": "to False", "reason": "Too early"},
        ):
            await audit.record(
                conn, organization_id=org["id"], event="org.edit", actor=olive, data=data
            )
        await audit.record(
            conn,
            organization_id=org["id"],
            event="member.pending",
            actor=audit.SYSTEM,
            target_member_id=alice_id,
            data={"email": "alice@example.com", "role": "member", "teams": [], "reason": "2fa"},
        )
    assert (await sign_in(client, "owner@example.com")).status == 200

    page = await (await client.get(AUDIT)).text()
    for said in (
        "Olive Owner scheduled the requirement for 14 January 2027.",
        "Olive Owner cancelled the scheduled requirement.",
        "Olive Owner turned on the requirement.",
        "Olive Owner turned off the requirement (reason: Too early).",
        "require2fa removed alice@example.com until they set up two-factor authentication.",
    ):
        assert said in page, said

    by_target = await (await client.get(AUDIT, params={"target": "alice"})).text()
    assert "removed alice@example.com" in by_target and "Olive Owner" not in by_target
    by_actor = await (await client.get(AUDIT, params={"actor": "olive"})).text()
    assert "turned on the requirement" in by_actor and "alice@" not in by_actor
    by_event = await (await client.get(AUDIT, params={"event": "member.pending"})).text()
    assert "removed alice@example.com" in by_event and "Olive Owner" not in by_event
    today = datetime.now(UTC).date()
    day = {"from": str(today), "to": str(today)}  # `to` counts its whole day
    today_only = await (await client.get(AUDIT, params=day)).text()
    assert "turned on the requirement" in today_only and "removed alice@" in today_only
    before = await (await client.get(AUDIT, params={"to": str(today - timedelta(days=1))})).text()
    after = await (await client.get(AUDIT, params={"from": str(today + timedelta(days=1))})).text()
    for text in (before, after):
        assert "No entries match these filters." in text and "Olive Owner" not in text
    assert (await client.get(AUDIT, params={"from": "soon"})).status == 400
    assert "export.csv?actor=olive" in by_actor

    exported = await client.get(f"{AUDIT}export.csv", params={"actor": "olive"})
    assert exported.status == 200 and exported.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await exported.text())))
    assert len(rows) == 4 and {row["event"] for row in rows} == {"org.edit"}
    assert rows[0]["description"] == "Olive Owner turned off the requirement (reason: Too early)."
    assert rows[-1]["description"] == "Olive Owner scheduled the requirement for 14 January 2027."
