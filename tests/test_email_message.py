"""The bytes `require2fa.emails.build_message` writes parse, with the email package, to the same
headers and parts as the message the email package itself built and aiosmtplib wrote out (what
was sent before the bytes were written directly), for every template, with names that are not
ASCII and with long lines; and they are what SMTP wants (CRLF lines, 7-bit, at most 78
characters a line)."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import pytest
from aiosmtplib.email import flatten_message

from require2fa.emails import POLICY, Rendered, build_message, render
from require2fa.settings import Settings
from tests.test_emails_render import BASE, CASES

NAMES = ("org_name", "inviter", "factor_name", "actor")
HEADERS = ("From", "To", "Subject", "Message-ID", "Auto-Submitted", "MIME-Version")
NOT_ASCII = "Société Générale Ünïcode — 日本語チーム Ελληνικά"
# A word longer than a line, a run of spaces, a line holding only a dot (SMTP's end of data),
# and trailing whitespace: what quoted-printable and the header folding must keep.
LONG = "Acme-" + "x" * 120 + "   Holdings\n.\nLimited \t"


def reference(rendered: Rendered, *, to: str, message_id: str, settings: Settings) -> bytes:
    """The message as it was sent before: built by the email package, written by aiosmtplib's
    `send_message` for a server that takes 8BITMIME (and SMTPUTF8 for an address not ASCII)."""
    message = EmailMessage(policy=POLICY)
    message["From"] = settings.email_from
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Message-ID"] = message_id
    message["Date"] = formatdate(usegmt=True)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return flatten_message(message, utf8=not to.isascii(), cte_type="8bit")


def parts(message: EmailMessage) -> list[tuple[str, str | None, list[str]]]:
    """Each part's type, charset and lines. Lines, not text: a part the email package wrote in
    base64 (mostly not ASCII) decodes to LF line ends, quoted-printable to the CRLF of SMTP."""
    return [
        (part.get_content_type(), part.get_content_charset(), part.get_content().splitlines())
        for part in message.iter_parts()
    ]


def variants() -> list[Any]:
    out = []
    for case in CASES:
        template, context = case.values[0], case.values[1]
        for name, value in (("ascii", None), ("not-ascii", NOT_ASCII), ("long", LONG)):
            changed = dict(context)
            if value is not None:
                changed.update({key: value for key in NAMES if key in context})
            out.append(pytest.param(template, changed, id=f"{case.id}-{name}"))
    return out


@pytest.fixture(params=["Require2FA <no-reply@example.com>", "Zwei Faktör <no-reply@example.com>"])
def settings(request: pytest.FixtureRequest) -> Settings:
    return Settings(base_url=BASE, email_from=request.param)


@pytest.mark.parametrize("to", ["ada@example.com", "zoë@exämple.com"])
@pytest.mark.parametrize(("template", "context"), variants())
def test_the_bytes_parse_as_the_email_package_built_them(
    settings: Settings, template: str, context: dict[str, Any], to: str
) -> None:
    rendered = render(template, context, settings)
    message_id = "<0123456789abcdef0123456789abcdef@require2fa>"

    message = build_message(rendered, to=to, message_id=message_id, settings=settings)
    ours = message_from_bytes(message.data, policy=policy.default)
    before = message_from_bytes(
        reference(rendered, to=to, message_id=message_id, settings=settings),
        policy=policy.default,
    )

    assert isinstance(ours, EmailMessage) and isinstance(before, EmailMessage)
    assert (message.sender, message.to, message.utf8) == (
        "no-reply@example.com",
        to,
        to != "ada@example.com",
    )
    for header in HEADERS:
        if header != "Subject" or rendered.subject.isascii():
            assert ours[header] == before[header], header
    # The subject as rendered. Before, the email package's folding lost the space in front of
    # a word it encoded: the subject not ASCII is written as encoded words of our own now.
    assert ours["Subject"] == rendered.subject
    assert (
        abs(
            (
                parsedate_to_datetime(ours["Date"]) - parsedate_to_datetime(before["Date"])
            ).total_seconds()
        )
        < 5
    )
    assert ours.get_content_type() == before.get_content_type() == "multipart/alternative"
    assert parts(ours) == parts(before)
    assert [p[0] for p in parts(ours)] == ["text/plain", "text/html"]
    assert ours.defects == [] and all(part.defects == [] for part in ours.iter_parts())

    # What SMTP wants: CRLF lines only, 7-bit unless the address needs SMTPUTF8, and lines of
    # at most 78 characters.
    data = message.data
    assert data.endswith(b"\r\n") and b"\r" not in data.replace(b"\r\n", b"")
    assert b"\n" not in data.replace(b"\r\n", b"")
    lines = data.decode().split("\r\n")
    assert max(len(line) for line in lines) <= 78
    if not message.utf8:
        assert data.isascii()
