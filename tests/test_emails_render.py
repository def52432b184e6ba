"""Every email template renders both parts, with absolute links and hostile names kept as text."""

from __future__ import annotations

import re
from email import message_from_bytes, policy

import pytest

from db.outbox import TEMPLATES
from require2fa.emails import TEMPLATE_DIR, Rendered, RenderError, build_message, render
from require2fa.settings import Settings

BASE = "https://2fa.example.com"
ACCEPT = f"{BASE}/accept/41/tok-abc_123/"
SECURITY = f"{BASE}/account/security/"
HOSTILE = '<script>alert("x")</script> & Co'

# (template, context, words the subject must contain, the link, words both parts must contain)
CASES = [
    pytest.param(
        "removed_for_2fa",
        {
            "org_name": "Acme",
            "org_slug": "acme",
            "member_email": "dev@example.com",
            "accept_url": ACCEPT,
            "reinstate_by": "2026-06-30T10:00:00+00:00",
        },
        "Mandatory: Enable Two-Factor Authentication",
        ACCEPT,
        ["Acme", "June 30, 2026", "projects", "notifications", "Enable Two-Factor Authentication"],
        id="removed_for_2fa",
    ),
    pytest.param(
        "invite",
        {"org_name": "Acme", "org_slug": "acme", "inviter": "Ada", "accept_url": ACCEPT},
        "Join Acme",
        ACCEPT,
        ["Ada", "Acme"],
        id="invite",
    ),
    pytest.param(
        "reminder_2fa",
        {"org_name": "Acme", "org_slug": "acme", "security_url": SECURITY},
        "Acme will require two-factor authentication",
        SECURITY,
        ["Acme", "second factor"],
        id="reminder_2fa",
    ),
    pytest.param(
        "expiry_soon",
        {
            "org_name": "Acme",
            "org_slug": "acme",
            "accept_url": ACCEPT,
            "reinstate_by": "2026-01-07T23:30:00-05:00",
        },
        "Your access to Acme expires soon",
        ACCEPT,
        ["Acme", "January 8, 2026"],  # shown in UTC
        id="expiry_soon",
    ),
    pytest.param(
        "security_notice",
        {
            "action": "added",
            "factor": "totp",
            "factor_name": "Phone app",
            "security_url": SECURITY,
        },
        "Security notice",
        SECURITY,
        ["added", "authenticator app", "Phone app"],
        id="security_notice-added",
    ),
    pytest.param(
        "security_notice",
        {
            "action": "removed",
            "factor": "sms",
            "factor_name": "+1 555 0100",
            "security_url": SECURITY,
        },
        "Security notice",
        SECURITY,
        ["removed", "backup phone", "+1 555 0100"],
        id="security_notice-removed",
    ),
    pytest.param(
        "security_notice",
        {
            "action": "reset",
            "org_name": "Acme",
            "actor": "owner@example.com",
            "removed": True,
            "security_url": SECURITY,
        },
        "Security notice: two-factor authentication reset",
        SECURITY,
        ["Acme", "owner@example.com", "reset", "Mandatory: Enable Two-Factor Authentication"],
        id="security_notice-reset",
    ),
    pytest.param(
        "countdown_2fa",
        {
            "org_name": "Acme",
            "org_slug": "acme",
            "enforce_at": "2027-03-01T12:00:00+00:00",
            "days": 7,
            "security_url": SECURITY,
        },
        "Acme will require two-factor authentication on March 1, 2027",
        SECURITY,
        ["Acme", "March 1, 2027", "in 7 days", "second factor"],
        id="countdown_2fa",
    ),
    pytest.param(
        "enforcement_summary",
        {
            "org_name": "Acme",
            "org_slug": "acme",
            "run_id": "7",
            "removed": 1234,
            "skipped": 8766,
            "total": 10000,
            "emails_queued": 1234,
            "emails_sent": 5,
            "pending_url": f"{BASE}/organizations/acme/members/?query=is%3Apending",
        },
        "Acme: two-factor enforcement finished",
        f"{BASE}/organizations/acme/members/?query=is%3Apending",
        ["Acme", "1,234", "8,766", "5 sent"],
        id="enforcement_summary",
    ),
    pytest.param(
        "enforcement_summary",
        {
            "org_name": "Acme",
            "org_slug": "acme",
            "run_id": "8",
            "removed": 10,
            "skipped": 990,
            "total": 0,
            "emails_queued": 10,
            "emails_sent": 10,
            "pending_url": f"{BASE}/organizations/acme/members/?query=is%3Apending",
            "status": "failed",
            "error": "batch 3 did not finish after 10 re-sends",
        },
        "Acme: two-factor enforcement finished",
        f"{BASE}/organizations/acme/members/?query=is%3Apending",
        ["It stopped before reaching every member", "batch 3 did not finish after 10 re-sends"],
        id="enforcement_summary-failed",
    ),
    pytest.param(
        "blocked_for_2fa",
        {
            "org_name": "Acme",
            "org_slug": "acme",
            "member_email": "dev@example.com",
            "level": "secure",
            "needs": "an authenticator app or a security key or passkey",
            "security_url": SECURITY,
        },
        "Action required: set up two-factor authentication for Acme",
        SECURITY,
        ["Acme", "authenticator app", "role, teams and notification settings"],
        id="blocked_for_2fa",
    ),
]


@pytest.fixture
def email_settings() -> Settings:
    return Settings(base_url=BASE, email_from="Require2FA <no-reply@example.com>")


def test_every_template_has_a_case() -> None:
    covered = {case.values[0] for case in CASES}
    assert covered == set(TEMPLATES)
    for name in TEMPLATES:
        for suffix in (".subject.txt", ".html", ".txt"):
            assert (TEMPLATE_DIR / f"{name}{suffix}").is_file()


@pytest.mark.parametrize(("template", "context", "subject", "link", "words"), CASES)
def test_renders_both_parts(
    email_settings: Settings, template, context, subject, link, words
) -> None:
    rendered = render(template, context, email_settings)

    assert subject in rendered.subject
    assert "\n" not in rendered.subject
    # The link is absolute, in the HTML as a real href and in the text as a line of its own.
    assert f'href="{link}"' in rendered.html
    assert link in rendered.text.splitlines()
    for word in words:
        assert word in rendered.html
        assert word in rendered.text
    # Nothing left unrendered, and the stylesheet went into style attributes.
    for part in (rendered.subject, rendered.html, rendered.text):
        assert not re.search(r"\{\{|\}\}|\{%|%\}", part)
    assert 'style="' in rendered.html
    assert ".button {" not in rendered.html
    # Every link in the HTML is absolute.
    for href in re.findall(r'href="([^"]*)"', rendered.html):
        assert href.startswith(BASE + "/"), href


def test_the_2fa_email_has_the_button(email_settings: Settings) -> None:
    context = CASES[0].values[1]
    rendered = render("removed_for_2fa", context, email_settings)
    button = re.search(r'<a class="button" href="([^"]+)"[^>]*>([^<]+)</a>', rendered.html)
    assert button is not None
    assert button.group(1) == ACCEPT
    assert button.group(2).strip() == "Enable Two-Factor Authentication"


@pytest.mark.parametrize(("template", "context", "subject", "link", "words"), CASES)
def test_hostile_values_stay_text(
    email_settings: Settings, template, context, subject, link, words
) -> None:
    hostile = {
        key: HOSTILE if key in ("org_name", "inviter", "factor_name", "member_email") else value
        for key, value in context.items()
    }
    rendered = render(template, hostile, email_settings)

    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    # The text part and subject are not HTML: the name reads as it was typed.
    if template != "security_notice":
        assert HOSTILE in rendered.text
    if template in ("invite", "reminder_2fa", "expiry_soon"):
        assert HOSTILE in rendered.subject


def test_a_missing_context_key_is_an_error(email_settings: Settings) -> None:
    with pytest.raises(RenderError, match="accept_url"):
        render("invite", {"org_name": "Acme", "org_slug": "acme", "inviter": "Ada"}, email_settings)


@pytest.mark.parametrize("name", ["nope", "_base", "../emails/invite", "invite.html"])
def test_an_unknown_template_is_an_error(email_settings: Settings, name: str) -> None:
    with pytest.raises(RenderError):
        render(name, {}, email_settings)


def test_the_2fa_email_without_its_optional_keys(email_settings: Settings) -> None:
    """A resent 2FA email may come without the member's address; it still renders."""
    context = {"org_name": "Acme", "org_slug": "acme", "accept_url": ACCEPT, "reinstate_by": None}
    rendered = render("removed_for_2fa", context, email_settings)
    assert ACCEPT in rendered.text
    assert "None" not in rendered.text


def test_message_has_both_parts_and_headers(email_settings: Settings) -> None:
    rendered = render(*CASES[1].values[:2], email_settings)
    message = build_message(
        rendered, to="ada@example.com", message_id="<abc@require2fa>", settings=email_settings
    )
    assert (message.sender, message.to, message.utf8) == (
        "no-reply@example.com",
        "ada@example.com",
        False,
    )
    parsed = message_from_bytes(message.data, policy=policy.default)

    assert parsed["From"] == "Require2FA <no-reply@example.com>"
    assert parsed["To"] == "ada@example.com"
    assert parsed["Subject"] == "Join Acme"
    assert parsed["Message-ID"] == "<abc@require2fa>"
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and ACCEPT in text.get_content()
    assert html is not None and f'href="{ACCEPT}"' in html.get_content()


@pytest.mark.parametrize(
    ("to", "message_id"),
    [
        ("ada@example.com\r\nBcc: all@example.com", "<abc@require2fa>"),
        ("ada@example.com\nBcc: all@example.com", "<abc@require2fa>"),
        ("ada@example.com, all@example.com", "<abc@require2fa>"),
        ("Ada <ada@example.com>", "<abc@require2fa>"),
        ("ada@example.com>\r\nRCPT TO:<all@example.com", "<abc@require2fa>"),
        ("", "<abc@require2fa>"),
        ("ada@example.com", "<abc@require2fa>\r\nBcc: all@example.com"),
    ],
)
def test_a_header_injection_is_refused(email_settings: Settings, to: str, message_id: str) -> None:
    rendered = render(*CASES[1].values[:2], email_settings)
    with pytest.raises(ValueError):
        build_message(rendered, to=to, message_id=message_id, settings=email_settings)


def test_a_subject_or_sender_with_a_line_break_is_refused(email_settings: Settings) -> None:
    rendered = render(*CASES[1].values[:2], email_settings)
    broken = Rendered(
        subject="Join\r\nBcc: all@example.com", html=rendered.html, text=rendered.text
    )
    with pytest.raises(ValueError):
        build_message(broken, to="ada@example.com", message_id="<a@b>", settings=email_settings)
    sender = email_settings.replace(email_from="A <a@example.com>\r\nBcc: all@example.com")
    with pytest.raises(ValueError):
        build_message(rendered, to="ada@example.com", message_id="<a@b>", settings=sender)


def test_the_environment_is_built_once(email_settings: Settings) -> None:
    from require2fa.emails import environment

    assert environment() is environment()
