"""The runs pages: the history of an organization's enforcement runs and one run with its
progress bars, live while it runs or emails are left to send, and a Cancel for owners."""

from __future__ import annotations

from tests.factories import add_member, create_org, create_user, enroll_totp, sign_in

SETTINGS = "/organizations/acme/settings/"
RUNS = "/organizations/acme/enforcements/"


async def test_a_run_in_history_and_on_its_own_page(client, pool) -> None:
    owner = await create_user(pool, "owner@example.com")
    org = await create_org(pool, "acme", owner["id"])
    for name in ("alice", "bob"):
        await add_member(pool, org["id"], await create_user(pool, f"{name}@example.com"))
    manager = await create_user(pool, "manager@example.com")
    await add_member(pool, org["id"], manager, role="manager")
    assert (await sign_in(client, "owner@example.com")).status == 200
    await enroll_totp(client)

    empty = await (await client.get(RUNS)).text()
    assert "No run yet." in empty
    await client.post(SETTINGS, data={"require2FA": "on", "confirmed": "yes"})
    async with pool.acquire() as conn:
        run_id = await conn.fetchval("select id from enforcement_runs")

    history = await (await client.get(RUNS)).text()
    assert f'href="{RUNS}{run_id}/"' in history and "queued" in history
    page = await client.get(f"{RUNS}{run_id}/")
    text = await page.text()
    assert page.status == 200 and "<progress" in text and 'id="sent"' in text
    assert 'data-live="yes"' in text and "/static/run.js" in text
    assert f"/api/0/organizations/acme/2fa-enforcements/{run_id}/" in text
    assert "Cancel the run" in text and 'name="require2FA" value="off"' in text

    # Ended with every email sent: no longer live, no Cancel.
    async with pool.acquire() as conn:
        await conn.execute(
            """update enforcement_runs set status = 'completed', total = 4, removed = 2,
                      skipped = 2, batches_total = 1, batches_done = 1, finished_at = now()""",
        )
    text = await (await client.get(f"{RUNS}{run_id}/")).text()
    assert "2</span> removed" in text and 'id="of-total"> of <span id="total-text">4' in text
    assert '<span id="checked-text">4</span>' in text and "Counting the members" in text
    assert 'id="counting" class="muted" hidden' in text
    assert 'data-live="yes"' not in text and "Cancel the run" not in text

    # With the requirement turned off again, a manager (without 2FA) sees the runs; a plain
    # member does not; another organization's run is not found.
    async with pool.acquire() as conn:
        await conn.execute("update organizations set require_2fa = false")
    assert (await sign_in(client, "manager@example.com")).status == 200
    assert (await client.get(f"{RUNS}{run_id}/")).status == 200
    plain = await create_user(pool, "plain@example.com")
    await add_member(pool, org["id"], plain)
    assert (await sign_in(client, "plain@example.com")).status == 200
    assert (await client.get(RUNS)).status == 403
    other_owner = await create_user(pool, "other@example.com")
    await create_org(pool, "other", other_owner["id"])
    assert (await sign_in(client, "other@example.com")).status == 200
    assert (await client.get(f"/organizations/other/enforcements/{run_id}/")).status == 404
    assert (await client.get("/organizations/other/enforcements/x/")).status == 404
