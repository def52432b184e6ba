"""The development mailbox lists and shows what the local SMTP sink stored; only in development."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from commands.devstack import MailSink
from db import outbox
from jobs import email as email_jobs
from require2fa.settings import Settings


async def deliver_to_sink(pool, redis, settings: Settings, data_dir: Path, orgs: list[str]) -> None:
    """Sends one invite per organization name through the outbox to a MailSink in `data_dir`,
    one dispatch each, so that they arrive in order (a dispatch sends over several connections)."""
    with MailSink(data_dir / "mail") as sink:
        for n, org in enumerate(orgs):
            async with pool.acquire() as conn:
                await outbox.enqueue(
                    conn,
                    template="invite",
                    to=f"guest{n}@example.com",
                    context={
                        "org_name": org,
                        "org_slug": f"org{n}",
                        "inviter": "Ada",
                        "accept_url": f"http://testserver/accept/{n}/tok{n}/",
                    },
                    dedupe_key=f"mailbox-test:{n}",
                )
            report = await email_jobs.dispatch(pool, redis, settings.replace(smtp_url=sink.url))
            assert report.sent == 1


async def test_lists_and_shows_the_sinks_messages(
    aiohttp_client, pool, redis, settings: Settings, tmp_path: Path
) -> None:
    await deliver_to_sink(pool, redis, settings, tmp_path, ["Acme", "<script>x</script>"])
    client = await aiohttp_client(create_app(settings.replace(data_dir=str(tmp_path))))

    listing = await client.get("/_dev/mailbox/")
    assert listing.status == 200
    page = await listing.text()
    assert "Join Acme" in page
    assert "guest0@example.com" in page
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    assert page.index("guest1@example.com") < page.index("guest0@example.com")  # newest first

    shown = await client.get("/_dev/mailbox/000001/")
    assert shown.status == 200
    body = await shown.text()
    assert "http://testserver/accept/0/tok0/" in body  # the text part
    assert 'src="/_dev/mailbox/000001/html"' in body

    html = await client.get("/_dev/mailbox/000001/html")
    assert html.status == 200
    assert "sandbox" in html.headers["Content-Security-Policy"]
    assert 'href="http://testserver/accept/0/tok0/"' in await html.text()

    raw = await client.get("/_dev/mailbox/2/raw")
    assert raw.status == 200
    assert "Message-ID:" in await raw.text()


@pytest.mark.parametrize(
    "path", ["/_dev/mailbox/999/", "/_dev/mailbox/..%2fx/", "/_dev/mailbox/abc/html"]
)
async def test_unknown_messages_are_404(
    aiohttp_client, settings: Settings, tmp_path: Path, path: str
) -> None:
    client = await aiohttp_client(create_app(settings.replace(data_dir=str(tmp_path))))
    response = await client.get(path)
    assert response.status == 404
    assert "detail" in await response.json()


async def test_an_empty_mailbox(aiohttp_client, settings: Settings, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(settings.replace(data_dir=str(tmp_path))))
    response = await client.get("/_dev/mailbox/?before=zzz")
    assert response.status == 400
    response = await client.get("/_dev/mailbox/")
    assert response.status == 200
    assert "No messages yet" in await response.text()


async def test_not_routed_outside_development(
    aiohttp_client, settings: Settings, tmp_path: Path
) -> None:
    production = settings.replace(
        environment="production",
        secret_key="a-real-secret-key-for-this-test",
        data_dir=str(tmp_path),
    )
    client = await aiohttp_client(create_app(production))
    for path in ("/_dev/mailbox/", "/_dev/mailbox", "/_dev/mailbox/000001/"):
        response = await client.get(path)
        assert response.status == 404


async def test_search_and_clear(aiohttp_client, pool, redis, settings: Settings, tmp_path) -> None:
    await deliver_to_sink(pool, redis, settings, tmp_path, ["Acme", "Globex", "Acme Two"])
    client = await aiohttp_client(create_app(settings.replace(data_dir=str(tmp_path))))

    found = await (await client.get("/_dev/mailbox/?q=acme")).text()
    assert "Join Acme" in found and "Join Globex" not in found
    assert "2 matches" in found
    assert found.index("Acme Two") < found.index("Join Acme</a>")  # newest first
    by_address = await (await client.get("/_dev/mailbox/?q=guest1@")).text()
    assert "Join Globex" in by_address and "Join Acme" not in by_address
    none = await (await client.get("/_dev/mailbox/?q=nothing-like-it")).text()
    assert "No message matches" in none

    refused = await client.post("/_dev/mailbox/clear/", headers={"Origin": "http://evil.example"})
    assert refused.status == 403
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 3
    cleared = await client.post(
        "/_dev/mailbox/clear/", headers={"Origin": "http://testserver"}, allow_redirects=False
    )
    assert cleared.status == 303 and cleared.headers["Location"] == "/_dev/mailbox/"
    assert list((tmp_path / "mail").glob("*.eml")) == []
    assert "No messages yet" in await (await client.get("/_dev/mailbox/")).text()


async def test_the_console_sms_code_is_in_the_mailbox(
    aiohttp_client, pool, settings: Settings, tmp_path: Path
) -> None:
    """A developer adds a backup phone and reads the code on the mailbox page, not in the log."""
    import re

    from tests.factories import create_user, enroll_totp, sign_in

    assert settings.sms_url == "console:"
    client = await aiohttp_client(create_app(settings.replace(data_dir=str(tmp_path))))
    await create_user(pool, "dev@example.com")
    assert (await sign_in(client, "dev@example.com")).status == 200
    await enroll_totp(client)
    url = "/api/0/users/me/authenticators/sms/enroll/"
    sent = await client.post(url, json={"phone": "+1 415 555 0123"})
    assert sent.status in (200, 202), await sent.text()

    page = await (await client.get("/_dev/mailbox/")).text()
    assert "Text messages" in page and "+14155550123" in page
    code = re.search(r"\b(\d{6})\b", page.split("Text messages", 1)[1])
    assert code is not None, page
    confirmed = await client.post(url, json={"phone": "+14155550123", "otp": code.group(1)})
    assert confirmed.status == 201, await confirmed.text()

    cleared = await client.post("/_dev/mailbox/clear/", allow_redirects=False)
    assert cleared.status == 303
    assert "No text messages yet." in await (await client.get("/_dev/mailbox/")).text()


async def test_outside_development_the_console_sms_leaves_no_file(
    settings: Settings, tmp_path: Path
) -> None:
    from require2fa import sms

    production = settings.replace(
        environment="production", secret_key="p" * 40, data_dir=str(tmp_path)
    )
    await sms.send(production, "+14155550123", "Your code is 123456.")
    assert sms.console_messages(tmp_path) == []
    assert not (tmp_path / sms.CONSOLE_FILE).exists()
    await sms.send(settings.replace(data_dir=str(tmp_path)), "+14155550123", "Code 654321.")
    assert [m["body"] for m in sms.console_messages(tmp_path)] == ["Code 654321."]
