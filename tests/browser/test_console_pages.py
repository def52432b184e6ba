"""The owner's console page by page, as a person uses it, at 1280 and 375 px (`check_page`: no
sideways scrolling, no serious axe-core finding): the members page's pages both ways and its
resend to every pending member; a run's page moving its bars batch by batch until every email
is sent; cancelling a run from its page; the audit log's filters and its CSV; the webhooks
page's deliveries from a real receiver; the security page's recovery codes (Copy, Print, "I
saved them") and a recovery code used twice; the favicon.

Each test builds its own organization and people (no shared state); `make screenshots` keeps
the pages shown in docs/screens/."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from jobs.enforcement import coordinate_run, remove_batch_now
from require2fa.factors import RECOVERY_CODE_USED
from tests.browser.test_admin_console import sign_in
from tests.browser.test_owner import owner_with_totp
from tests.factories import PASSWORD, add_member, create_org, create_user, remove_for_2fa
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.browser

PEOPLE = (  # email, name, role, teams, has 2FA
    ("ada@example.com", "Ada Lovelace", "admin", ("backend",), True),
    ("ken@example.com", "Ken Thompson", "member", ("backend",), False),
    ("grace@example.com", "Grace Hopper", "manager", ("platform",), True),
    ("linus@example.com", "Linus Torvalds", "member", ("backend", "platform"), False),
    ("margaret@example.com", "Margaret Hamilton", "member", ("frontend",), True),
    ("barbara@example.com", "Barbara Liskov", "billing", (), False),
    ("dennis@example.com", "Dennis Ritchie", "member", ("platform",), True),
)


async def olive_and_acme(pool, settings, teams=("backend", "frontend", "platform")):
    """Olive Owner (password and an authenticator app) owning Acme; her app's secret, Acme."""
    secret = await owner_with_totp(pool, settings, "olive@example.com")
    async with pool.acquire() as conn:
        owner_id = await conn.fetchval("select id from users where email = 'olive@example.com'")
    return secret, await create_org(pool, "acme", owner_id, teams=teams)


async def add_people(pool, settings, org_id: int) -> dict[str, int]:
    ids = {}
    for email, name, role, teams, has2fa in PEOPLE:
        user = await create_user(pool, email, name=name, has2fa=has2fa)
        ids[email] = await add_member(pool, org_id, user, role=role, teams=teams)
    return ids


async def turn_on(page, base: str, *, on_a_date: str | None = None) -> None:
    """Security & Privacy: Turn on, then confirm in the dialog (now, or on a date)."""
    await page.goto(base + "/organizations/acme/settings/")
    await page.get_by_role("button", name="Turn on").click()
    dialog = page.get_by_role("dialog", name="Require two-factor authentication?")
    if on_a_date:
        await dialog.get_by_label("On a date").check()
        await dialog.get_by_label("Date and time (UTC)").fill(on_a_date)
    await dialog.get_by_role("button", name="Require two-factor authentication").click()
    await page.wait_for_url(base + "/organizations/acme/settings/")


async def test_the_members_page_counts_pages_both_ways_and_resends(
    live_server, page, check_page, pool, settings
) -> None:
    base = live_server
    secret, org = await olive_and_acme(pool, settings)
    ids = await add_people(pool, settings, org["id"])
    await remove_for_2fa(pool, ids["ken@example.com"], settings)
    await sign_in(page, base, "olive@example.com", secret)

    await page.goto(base + "/organizations/acme/members/?per_page=5")
    main = page.get_by_role("main")
    assert "8 members." in await main.inner_text()
    assert (
        "pending: removed for no 2FA"
        in await page.get_by_role("row", name=re.compile("ken@")).inner_text()
    )
    assert await page.get_by_role("link", name="Previous page").count() == 0
    await check_page(page, "members-console")

    await page.get_by_role("link", name="Next page").click()
    text = await main.inner_text()
    assert "barbara@example.com" in text and "dennis@example.com" in text
    assert "olive@example.com" not in text and "8 members." in text
    assert await page.get_by_role("link", name="Next page").count() == 0
    await page.get_by_role("link", name="Previous page").click()
    text = await main.inner_text()
    assert "olive@example.com" in text and "linus@example.com" in text
    assert "barbara@example.com" not in text

    # Resend to every pending member: one button with the count, back on the same page.
    await page.get_by_role("button", name="Resend to every pending member (1)").click()
    assert "sent again to 1 pending member." in await page.get_by_role("status").inner_text()
    assert "per_page=5" in page.url and "olive@example.com" in await main.inner_text()


async def test_a_run_page_moves_its_bars_until_every_email_is_sent(
    live_server, page, check_page, pool, settings, start_worker, mailbox
) -> None:
    base = live_server
    secret, org = await olive_and_acme(pool, settings)
    for n in range(30):
        user = await create_user(pool, f"dev{n:02}@example.com", has2fa=n % 3 == 0)
        await add_member(pool, org["id"], user)
    await sign_in(page, base, "olive@example.com", secret)
    await turn_on(page, base)
    async with pool.acquire() as conn:
        run_id = await conn.fetchval("select id from enforcement_runs")

    # The pipeline's own steps, two batches of ten of the four: the run is half way.
    planned: list[int] = []
    await coordinate_run(pool, run_id, batch_size=10, send=lambda _run, n: planned.append(n))
    assert len(planned) == 4
    worker_settings = settings.replace(base_url=base)
    for batch_no in planned[:2]:
        await remove_batch_now(pool, worker_settings, run_id, batch_no)
    await page.get_by_role("link", name=f"Follow run {run_id} until every email is sent").click()
    assert await page.inner_text("#run-status") == "running"
    checked = page.get_by_role("progressbar", name="Members checked")
    assert await checked.get_attribute("value") == "20"
    assert await checked.get_attribute("max") == "31"
    # Owner and dev00…dev18 checked; every third dev has an app.
    removed_so_far = sum(1 for n in range(19) if n % 3)
    said = f"20 of 31 members checked; {removed_so_far} removed."
    assert said in (await page.inner_text("main")).replace("\n", " ")
    assert await page.get_by_text("This page updates itself").is_visible()
    await check_page(page, "run-in-progress")

    # The rest of the batches, and the email worker: the bars fill without a reload.
    for batch_no in planned[2:]:
        await remove_batch_now(pool, worker_settings, run_id, batch_no)
    start_worker("email", threads=2)
    sent = page.get_by_role("progressbar", name="Emails sent")
    for _ in range(120):
        if await page.inner_text("#run-status") == "completed" and (
            await sent.get_attribute("value") == "20"
        ):
            break
        await page.wait_for_timeout(500)
    text = (await page.inner_text("main")).replace("\n", " ")
    assert "31 of 31 members checked; 20 removed." in text
    assert "20 of 20 emails sent." in text
    assert await page.get_by_text("This page updates itself").is_hidden()
    removed_to = {str(m["To"]) for m in mailbox.messages if str(m["To"]).startswith("dev")}
    assert len(removed_to) == 20


async def test_an_owner_cancels_a_run_from_its_page(
    live_server, page, check_page, pool, settings
) -> None:
    base = live_server
    secret, org = await olive_and_acme(pool, settings)
    await add_people(pool, settings, org["id"])
    await sign_in(page, base, "olive@example.com", secret)
    await turn_on(page, base)  # no worker runs: the run waits, queued
    async with pool.acquire() as conn:
        run_id = await conn.fetchval("select id from enforcement_runs")

    await page.get_by_role("link", name="Enforcement runs").click()
    await page.get_by_role("link", name=f"Run {run_id}").click()
    assert await page.inner_text("#run-status") == "queued"
    assert await page.get_by_text("Counting the members").is_visible()
    await page.get_by_role("button", name="Cancel the run").click()
    dialog = page.get_by_role("dialog", name="Turn off the requirement?")
    assert await dialog.evaluate("d => d.matches(':modal')")
    assert "The run under way stops." in await dialog.inner_text()
    await dialog.get_by_label("Reason").fill("Wrong week")
    await check_page(page, "run-cancel-confirm")
    await dialog.get_by_role("button", name="Turn off the requirement").click()
    assert "no longer required" in await page.get_by_role("status").inner_text()

    await page.goto(base + f"/organizations/acme/enforcements/{run_id}/")
    assert await page.inner_text("#run-status") == "cancelled"
    assert await page.get_by_role("button", name="Cancel the run").count() == 0
    assert await page.get_by_text("Counting the members").is_hidden()
    async with pool.acquire() as conn:
        data = await conn.fetchval(
            "select data from audit_log where event = 'org.edit' order by id desc limit 1"
        )
    assert data["reason"] == "Wrong week"


async def test_the_audit_log_filters_by_event_actor_and_dates_and_exports_them(
    live_server, page, check_page, pool, settings, tmp_path
) -> None:
    base = live_server
    secret, org = await olive_and_acme(pool, settings)
    ids = await add_people(pool, settings, org["id"])
    await sign_in(page, base, "olive@example.com", secret)
    when = (datetime.now(UTC) + timedelta(days=30)).replace(hour=9, minute=0)
    await turn_on(page, base, on_a_date=when.strftime("%Y-%m-%dT%H:%M"))
    await page.goto(base + "/organizations/acme/members/")
    await page.get_by_text("Invite a member").click()
    await page.get_by_label("Email", exact=True).fill("joan@example.com")
    await page.get_by_role("button", name="Send invitation").click()
    await page.get_by_role("status").wait_for()
    await remove_for_2fa(pool, ids["ken@example.com"], settings)

    await page.get_by_role("navigation", name="Acme").get_by_role("link", name="Audit log").click()
    said = await page.locator("tbody td.said").all_inner_texts()
    assert (
        said[0] == "require2fa removed ken@example.com until they set up two-factor authentication."
    )
    assert "Olive Owner invited joan@example.com as member." in said
    assert f"Olive Owner scheduled the requirement for {when.day} {when:%B %Y}." in said
    await check_page(page, "audit-log-console")

    await page.get_by_label("Event").select_option("member.invite")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"event=member\.invite"))
    assert await page.locator("tbody td.said").all_inner_texts() == [
        "Olive Owner invited joan@example.com as member."
    ]

    await page.get_by_role("link", name="Clear").click()
    today = datetime.now(UTC).date()
    await page.get_by_label("Actor").fill("olive")
    await page.get_by_label("From", exact=True).fill(str(today))
    await page.get_by_label("To", exact=True).fill(str(today))
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"actor=olive"))
    by_olive = await page.locator("tbody td.said").all_inner_texts()
    assert len(by_olive) == 2 and all(text.startswith("Olive Owner ") for text in by_olive)
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download these entries (CSV)").click()
    download = await download_info.value
    saved = tmp_path / "audit.csv"
    await download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [row["description"] for row in rows] == by_olive

    await page.get_by_label("From", exact=True).fill(str(today + timedelta(days=1)))
    await page.get_by_label("To", exact=True).fill("")
    await page.get_by_role("button", name="Filter").click()
    await page.get_by_text("No entries match these filters.").wait_for()


async def test_the_webhooks_page_shows_what_a_receiver_answered(
    live_server, page, check_page, pool, settings, start_worker
) -> None:
    base = live_server
    receiver = Receiver()
    await receiver.start()
    try:
        secret, _ = await olive_and_acme(pool, settings)
        await sign_in(page, base, "olive@example.com", secret)
        start_worker("webhooks", threads=2)
        await page.goto(base + "/organizations/acme/webhooks/")
        await page.get_by_label("Payload URL").fill(receiver.url)
        await page.get_by_label("Only these:").check()
        for event in ("org.edit", "member.pending", "member.accept", "webhook.create"):
            await page.get_by_label(event, exact=True).check()
        await page.get_by_role("button", name="Add webhook").click()
        assert "Its secret is shown this once" in await page.inner_text("main")
        await receiver.wait_for(1)  # webhook.create
        await page.get_by_role("button", name="Ping").click()
        await receiver.wait_for(2)
        assert receiver.events() == ["webhook.create", "ping"]
        for _ in range(60):
            await page.goto(base + "/organizations/acme/webhooks/")
            if (await page.locator("tbody").inner_text()).count("delivered") == 2:
                break
            await page.wait_for_timeout(500)
        rows = await page.locator("tbody tr").all_inner_texts()
        assert len(rows) == 2 and all("delivered" in row and "200" in row for row in rows)
        await check_page(page, "webhooks-console")
        await page.get_by_role("button", name=re.compile("^Redeliver ping")).click()
        assert "was queued again" in await page.inner_text("main")
        await receiver.wait_for(3)
        assert receiver.events()[-1] == "ping"
    finally:
        await receiver.stop()


async def test_recovery_codes_are_copied_printed_and_saved_and_each_signs_in_once(
    live_server, page, check_page, pool, settings
) -> None:
    base = live_server
    await create_user(pool, "ada@example.com", name="Ada Lovelace")
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    # What Print opens is the browser's dialog: counted here instead of shown.
    await page.add_init_script("window.printed = 0; window.print = () => { window.printed += 1; };")
    icon = await page.request.get(base + "/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/")

    await page.goto(base + "/auth/login/")
    await page.get_by_label("Email", exact=True).fill("ada@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(base + "/")
    assert await page.locator("link[rel=icon]").get_attribute("href") == "/favicon.ico"
    await page.goto(base + "/account/security/")
    # Nothing to back up yet: the page starts with an app or a key, not a phone.
    assert await page.get_by_role("heading", name="Add a backup phone").count() == 0
    secret = await page.locator("input[name=secret]").input_value()
    await page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Confirm", exact=True).click()
    codes = await page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10

    await page.get_by_role("button", name="Copy").click()
    await page.get_by_text("Copied.").wait_for()
    assert await page.evaluate("navigator.clipboard.readText()") == "\n".join(codes) + "\n"
    await page.get_by_role("button", name="Print").click()
    assert await page.evaluate("window.printed") == 1
    await check_page(page, "security-recovery-codes-console")
    await page.get_by_role("link", name="I saved them").click()
    await page.wait_for_url(base + "/account/security/")
    assert await page.locator("#recovery-codes").count() == 0
    assert await page.get_by_role("heading", name="Add a backup phone").is_visible()

    async def sign_in_with(code: str) -> None:
        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_label("Email", exact=True).fill("ada@example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await page.get_by_label("Code").fill(code)
        await page.get_by_role("button", name="Verify").click()

    await sign_in_with(codes[0])
    await page.wait_for_url(base + "/")
    await sign_in_with(codes[0])
    assert RECOVERY_CODE_USED in await page.get_by_role("alert").inner_text()
    await check_page(page, "login-recovery-code-used")


async def test_an_api_token_is_shown_once_used_and_revoked(
    live_server, page, check_page, pool, settings
) -> None:
    base = live_server
    secret, _ = await olive_and_acme(pool, settings)
    await sign_in(page, base, "olive@example.com", secret)
    await page.get_by_role("link", name="API tokens").click()
    await page.get_by_label("Name").fill("CI deploys")
    await page.get_by_role("button", name="Create token").click()
    token = await page.locator("#new-token").inner_text()
    row = page.get_by_role("row", name=re.compile("CI deploys"))
    assert "never" in await row.inner_text()

    bearer = {"Authorization": f"Bearer {token}"}
    used = await page.request.get(base + "/api/0/users/me/", headers=bearer)
    assert used.status == 200 and (await used.json())["email"] == "olive@example.com"
    await page.goto(base + "/account/tokens/")
    assert await page.locator("#new-token").count() == 0  # shown once
    assert "never" not in await row.inner_text()
    await check_page(page, "tokens-used")

    await page.get_by_role("button", name="Revoke the token CI deploys").click()
    assert await page.get_by_role("row", name=re.compile("CI deploys")).count() == 0
    refused = await page.request.get(base + "/api/0/users/me/", headers=bearer)
    assert refused.status == 401
