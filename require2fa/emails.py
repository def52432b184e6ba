"""Rendering the outbox's emails from `templates/emails/`: a subject line, an HTML part
with its CSS inlined, and a plain-text part. Pure functions over one cached Jinja2 environment.

Each email `<name>` has three templates: `<name>.subject.txt`, `<name>.html` (extends
`_base.html`) and `<name>.txt`. HTML is autoescaped, text and subject are not (they are not
HTML); a context key a template uses but the producer did not give is an error, never a blank.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import headerregistry, policy
from email.utils import formatdate
from importlib import resources
from pathlib import Path
from typing import Any

import css_inline
import jinja2

from require2fa import email_contexts
from require2fa.settings import Settings

# The emails are package data of the top-level package `templates` (pyproject.toml), found
# through the import system: the source tree, an editable install and an installed wheel each
# resolve it to the directory Python imports it from, where a path relative to this module
# would miss them once installed (they are not under `require2fa/`). A regular package, so that
# `files()` is one directory on disk, which Jinja2's FileSystemLoader reads.
TEMPLATE_DIR = Path(str(resources.files("templates") / "emails"))

FACTOR_LABELS = {
    "totp": "authenticator app",
    "sms": "backup phone",
    "webauthn": "security key",
    "recovery": "recovery codes",
}


class _HeaderRegistry(headerregistry.HeaderRegistry):
    """The standard header registry, but it makes each header's class once, not per lookup.

    The standard one builds a new class on every lookup, about a third of building a message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


# Like `email.policy.default` (headers parsed and checked, lines folded), only faster; with
# CRLF lines as SMTP sends them, and raw UTF-8 when the server takes SMTPUTF8.
POLICY = policy.default.clone(header_factory=_HeaderRegistry())
_SMTP = POLICY.clone(linesep="\r\n")
_SMTPUTF8 = _SMTP.clone(utf8=True)


class RenderError(Exception):
    """The email cannot be rendered (unknown template, missing context key): retrying won't help."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def _date(value: str | datetime) -> str:
    """`2026-03-01T12:00:00+00:00` → `March 1, 2026` (the date in UTC)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%B} {moment.day}, {moment.year}"


def _factor_label(value: str) -> str:
    return FACTOR_LABELS.get(value, value)


@functools.cache
def environment() -> jinja2.Environment:
    """The one environment: templates are read and compiled once per process."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    env.filters["date"] = _date
    env.filters["factor_label"] = _factor_label
    return env


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    # @media rules cannot be inlined; keeping them in a <style> lets clients that read it adapt.
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def render(template: str, context: Mapping[str, Any], settings: Settings) -> Rendered:
    """Subject, HTML (CSS inlined) and text of email `template` with the producer's `context`.

    Raises `RenderError` when the template does not exist or needs a key `context` lacks.
    """
    if template.startswith("_") or "/" in template:
        raise RenderError(f"unknown email template {template!r}")
    env = environment()
    values = {**context, "base_url": settings.base_url}
    sealed = values.pop(email_contexts.SEALED_LINK, None)
    if sealed is not None:
        try:
            values["accept_url"] = email_contexts.open_link(settings.secret_key, str(sealed))
        except ValueError as err:
            raise RenderError(f"{template}: {err}") from err
    try:
        subject = env.get_template(f"{template}.subject.txt").render(values)
        html = env.get_template(f"{template}.html").render(values)
        text = env.get_template(f"{template}.txt").render(values)
    except jinja2.TemplateNotFound as err:
        raise RenderError(f"unknown email template {template!r} ({err.name} is missing)") from err
    except (jinja2.TemplateError, ValueError) as err:
        raise RenderError(f"{template}: {err}") from err
    return Rendered(
        # One line whatever the template or the context holds: a header cannot span lines.
        subject=" ".join(subject.split()),
        html=_inliner().inline(html),
        text=text.strip() + "\n",
    )


@dataclass(frozen=True)
class Message:
    """One email as the SMTP server gets it: the envelope and the RFC 5322 bytes (CRLF lines)."""

    sender: str  # the envelope's: EMAIL_FROM's address
    to: str
    data: bytes
    utf8: bool  # an address is not ASCII: the server must take SMTPUTF8 (RFC 6531)


# One mailbox, as the outbox holds them (`api.limits.Email`): no display name, comment, quoted
# local part, whitespace or control character, so that it cannot add a header or a recipient.
_ADDRESS = re.compile(r'[^\s\x00-\x1f\x7f"(),:;<>@\[\\\]]+@[^\s\x00-\x1f\x7f"(),:;<>@\[\\\]]+')
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+>")  # printable ASCII between angle brackets
_MAX_LINE = 78  # the email package's (`policy.default.max_line_length`)
_CRLF = b"\r\n"
# UTF-8 bytes in one encoded word: `Subject: =?utf-8?b?…?=` stays within 78 characters.
_WORD_BYTES = 42


@functools.lru_cache(maxsize=512)
def _header(name: str, value: str, utf8: bool) -> bytes:
    """`name: value` as the email package folds it (encoded words for what is not ASCII, or
    UTF-8 as it is for SMTPUTF8), with its CRLF. Cached: a run's emails share their From and
    Subject. Raises `ValueError` for a value the email package refuses."""
    if "\r" in value or "\n" in value:
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    target = _SMTPUTF8 if utf8 else _SMTP
    folded: str = target.header_factory(name, value).fold(policy=target)
    return folded.encode()


@functools.lru_cache(maxsize=512)
def _subject(subject: str, utf8: bool) -> bytes:
    """The Subject header. One that is not ASCII is written as RFC 2047 encoded words (base64
    of UTF-8), one a line, each holding its spaces: the email package's folding drops the
    space before a word it encodes ("Ünïcode — 日本" becomes "Ünïcode— 日本")."""
    if subject.isascii():
        return _header("Subject", subject, utf8)
    if "\r" in subject or "\n" in subject:
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    words, word = [], b""
    for char in subject:
        encoded = char.encode()
        if len(word) + len(encoded) > _WORD_BYTES:
            words.append(word)
            word = b""
        word += encoded
    words.append(word)
    return (
        b"Subject: "
        + b"\r\n ".join(b"=?utf-8?b?" + base64.b64encode(word) + b"?=" for word in words)
        + _CRLF
    )


@functools.lru_cache(maxsize=8)
def _sender(email_from: str) -> str:
    """The address of `EMAIL_FROM` (`Name <address>`), the envelope's sender."""
    addresses = POLICY.header_factory("From", email_from).addresses
    address: str = addresses[0].addr_spec if len(addresses) == 1 else ""
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"EMAIL_FROM {email_from!r} is not one plain address")
    return address


def _encoded(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, body) of one text part, its lines in CRLF: as they are when
    they are ASCII and at most 78 characters long, else quoted-printable (the email package's
    choice, without its 8bit: the message stays 7-bit whatever the server takes)."""
    lines = text.encode().splitlines()
    body = _CRLF.join(lines) + _CRLF
    if body.isascii() and max(map(len, lines), default=0) <= _MAX_LINE:
        return b"7bit", body
    return b"quoted-printable", binascii.b2a_qp(body, istext=True)


def _boundary(parts: list[tuple[bytes, bytes]]) -> bytes:
    """A boundary that no part holds. Quoted-printable never has `=_` (a literal `=` is
    `=3D`); a 7bit part is looked at."""
    while True:
        boundary = b"=_" + secrets.token_hex(16).encode()
        if not any(b"--" + boundary in body for encoding, body in parts if encoding == b"7bit"):
            return boundary


def build_message(rendered: Rendered, *, to: str, message_id: str, settings: Settings) -> Message:
    """The MIME message as bytes, ready for SMTP: the text part first, then the HTML
    alternative. Written directly rather than through the email package (which spent more than
    a millisecond an email building it, and the SMTP client as long again writing it out); the
    headers are folded by the email package (encoded words for what is not ASCII), once per
    value, and `tests/test_emails_render.py` checks that the email package parses both alike.

    Raises `ValueError` for an address or header that could not be sent as it is.
    """
    if not _ADDRESS.fullmatch(to):
        raise ValueError(f"not a plain address: {to!r}")
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"not a Message-ID: {message_id!r}")
    sender = _sender(settings.email_from)
    utf8 = not (sender.isascii() and to.isascii())
    parts = [(b"text/plain", *_encoded(rendered.text)), (b"text/html", *_encoded(rendered.html))]
    boundary = _boundary([(encoding, body) for _, encoding, body in parts])
    data = [
        _header("From", settings.email_from, utf8),
        b"To: ", to.encode(), _CRLF,
        _subject(rendered.subject, utf8),
        b"Message-ID: ", message_id.encode(), _CRLF,
        b"Date: ", formatdate(usegmt=True).encode(), _CRLF,
        # Asks auto-responders (vacation replies) not to answer.
        b"Auto-Submitted: auto-generated\r\n",
        b"MIME-Version: 1.0\r\n",
        b'Content-Type: multipart/alternative;\r\n boundary="', boundary, b'"\r\n\r\n',
    ]  # fmt: skip
    for content_type, encoding, body in parts:
        data += [b"--", boundary, b"\r\nContent-Type: ", content_type, b'; charset="utf-8"\r\n']
        # The CRLF after the body is the next delimiter's (RFC 2046): the part ends with its own.
        data += [b"Content-Transfer-Encoding: ", encoding, b"\r\n\r\n", body, _CRLF]
    data += [b"--", boundary, b"--\r\n"]
    return Message(sender=sender, to=to, data=b"".join(data), utf8=utf8)
