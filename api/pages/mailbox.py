"""The development mailbox: what the local SMTP sink received, at `/_dev/mailbox/`.

The sink (`commands.devstack.MailSink`) stores each message as `<data_dir>/mail/NNNNNN.eml`.
These pages list those files, newest first (with a search over the subject and the address),
show one (headers, the text part, and the HTML part in a sandboxed frame), and clear them all
(`POST /_dev/mailbox/clear/`, from this site's pages only). Under the mail, the list shows
the latest text messages of the `console:` SMS gateway (`require2fa.sms`), so that a backup
phone code is read there rather than in the server's log; clearing clears them too. They exist
only in development: `create_app` adds them then and never otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path

import jinja2
from aiohttp import web

from api.errors import api_error
from api.keys import SETTINGS
from require2fa import sms

PREFIX = "/_dev/mailbox"
PAGE_SIZE = 50
SMS_SHOWN = 20  # the latest text messages shown under the mail
_NAME = re.compile(r"^[0-9]{1,12}$")
# The HTML part is someone else's markup: no scripts, no requests out, only its own styles.
# Framed by the mailbox page itself (same origin), unlike every other page.
_HTML_PART_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"
)

_LIST = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mailbox · require2fa</title>
<link rel="stylesheet" href="/static/app.css">
</head><body>
<main>
<h1>Mailbox</h1>
<p class="muted">{{ total }} message{{ "" if total == 1 else "s" }} in {{ mail_dir }}
{%- if query %}; {{ matched }} match{{ "" if matched == 1 else "es" }} <q>{{ query }}</q>
{%- endif %}</p>
<form class="inline-form" method="get" action="{{ prefix }}/">
  <label for="q">Search <span class="muted">(subject or address)</span></label>
  <input type="search" id="q" name="q" value="{{ query }}">
  <button type="submit">Search</button>
</form>
{% if total or texts %}
<form method="post" action="{{ prefix }}/clear/">
  <button type="submit" class="secondary">Clear the mailbox</button>
</form>
{% endif %}
<div class="card spaced">
{% if rows %}
<table class="stack">
<thead><tr><th>#</th><th>Date</th><th>To</th><th>Subject</th></tr></thead>
<tbody>
{% for row in rows %}
<tr><td><a href="{{ prefix }}/{{ row.number }}/">{{ row.number }}</a></td>
<td class="when muted" data-label="Date">{{ row.date }}</td>
<td class="email" data-label="To">{{ row.to }}</td>
<td data-label="Subject"><a href="{{ prefix }}/{{ row.number }}/">{{ row.subject }}</a></td></tr>
{% endfor %}
</tbody>
</table>
{% elif query %}
<p>No message matches <q>{{ query }}</q>.</p>
{% else %}
<p>No messages yet.</p>
{% endif %}
</div>
{% if older %}
<p><a href="{{ prefix }}/?{{ {"before": older, "q": query}|urlencode }}">Older messages</a></p>
{% endif %}
<h2 id="sms">Text messages</h2>
<p class="muted">What the <code>console:</code> SMS gateway sent (backup phone codes), newest
first.</p>
<div class="card spaced">
{% if texts %}
<table class="stack">
<thead><tr><th>Date</th><th>To</th><th>Message</th></tr></thead>
<tbody>
{% for text in texts %}
<tr><td class="when muted" data-label="Date">{{ text.time }}</td>
<td class="email" data-label="To">{{ text.to }}</td>
<td data-label="Message">{{ text.body }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>No text messages yet.</p>
{% endif %}
</div>
</main>
</body></html>
"""

_MESSAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ subject }} · Mailbox</title>
<link rel="stylesheet" href="/static/app.css">
</head><body>
<main>
<p><a href="{{ prefix }}/">&larr; Mailbox</a> &middot;
<a href="{{ prefix }}/{{ number }}/raw">Raw</a></p>
<h1>{{ subject }}</h1>
<div class="card">
<table><tbody>{% for name, value in headers %}
<tr><th scope="row">{{ name }}</th><td class="email">{{ value }}</td></tr>
{% endfor %}</tbody></table>
</div>
{% if has_html %}<h2>HTML</h2>
<iframe class="mail-html" sandbox src="{{ prefix }}/{{ number }}/html" title="HTML part">
</iframe>{% endif %}
{% if text is not none %}<h2>Text</h2><pre class="mail-text">{{ text }}</pre>{% endif %}
</main>
</body></html>
"""

SHOWN_HEADERS = ("From", "To", "Subject", "Date", "Message-ID")


@dataclass(frozen=True)
class Row:
    number: str
    date: str
    to: str
    subject: str


@functools.cache
def _template(source: str) -> jinja2.Template:
    """Compiled once per process."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source)


def _mail_dir(request: web.Request) -> Path:
    return Path(request.app[SETTINGS].data_dir) / "mail"


def _numbers(mail_dir: Path) -> list[int]:
    """Stored message numbers, newest first."""
    return sorted(
        (int(path.stem) for path in mail_dir.glob("*.eml") if _NAME.match(path.stem)), reverse=True
    )


def _row(path: Path, number: int) -> Row:
    with path.open("rb") as file:
        headers = BytesHeaderParser(policy=policy.default).parse(file)
    return Row(
        number=f"{number:06d}",
        date=str(headers.get("Date", "")),
        to=str(headers.get("To", "")),
        subject=str(headers.get("Subject", "(no subject)")),
    )


def _matches(row: Row, query: str) -> bool:
    return query in row.subject.lower() or query in row.to.lower()


def _row_or_none(mail_dir: Path, number: int) -> Row | None:
    try:
        return _row(mail_dir / f"{number:06d}.eml", number)
    except FileNotFoundError:  # cleared meanwhile
        return None


def _listing(
    mail_dir: Path, before: int | None, query: str
) -> tuple[int, int, list[Row], int | None]:
    """(messages, those matching `query`, this page's rows newest first, the number to ask for
    older ones `before`, or None)."""
    numbers = _numbers(mail_dir)
    if query:
        found = [
            row
            for n in numbers
            if (row := _row_or_none(mail_dir, n)) is not None and _matches(row, query)
        ]
        later = [row for row in found if before is None or int(row.number) < before]
        rows = later[:PAGE_SIZE]
        older = int(rows[-1].number) if len(later) > PAGE_SIZE else None
        return len(numbers), len(found), rows, older
    shown = [n for n in numbers if before is None or n < before]
    rows = [row for n in shown[:PAGE_SIZE] if (row := _row_or_none(mail_dir, n)) is not None]
    older = shown[PAGE_SIZE - 1] if len(shown) > PAGE_SIZE else None
    return len(numbers), len(numbers), rows, older


async def mailbox(request: web.Request) -> web.Response:
    """Lists the stored messages, newest first, `PAGE_SIZE` a page (`?before=N` for older),
    those whose subject or address contains `?q=` when given."""
    before_text = request.query.get("before") or None
    if before_text is not None and not _NAME.match(before_text):
        raise api_error(400, "before must be a message number.")
    query = request.query.get("q", "").strip()[:200]
    mail_dir = _mail_dir(request)
    total, matched, rows, older = await asyncio.to_thread(
        _listing, mail_dir, int(before_text) if before_text else None, query.lower()
    )
    texts = await asyncio.to_thread(
        sms.console_messages, Path(request.app[SETTINGS].data_dir), SMS_SHOWN
    )
    html = _template(_LIST).render(
        texts=texts,
        total=total,
        matched=matched,
        rows=rows,
        older=older,
        query=query,
        mail_dir=str(mail_dir),
        prefix=PREFIX,
    )
    return web.Response(text=html, content_type="text/html")


def _clear(mail_dir: Path) -> int:
    cleared = 0
    for path in mail_dir.glob("*.eml"):
        if _NAME.match(path.stem):
            path.unlink(missing_ok=True)
            cleared += 1
    return cleared


async def clear(request: web.Request) -> web.Response:
    """Deletes every stored message and text message (a form of these pages: another site's is
    refused)."""
    origin = request.headers.get("Origin")
    if (
        origin is not None
        and origin.rstrip("/").lower() not in request.app[SETTINGS].allowed_origins
    ):
        raise api_error(403, "The mailbox is cleared from its own page only.")
    await asyncio.to_thread(_clear, _mail_dir(request))
    await asyncio.to_thread(sms.clear_console, Path(request.app[SETTINGS].data_dir))
    raise web.HTTPSeeOther(f"{PREFIX}/")


async def _load(request: web.Request) -> tuple[str, EmailMessage, bytes]:
    number = request.match_info["number"]
    if not _NAME.match(number):
        raise api_error(404, "No such message.")
    path = _mail_dir(request) / f"{int(number):06d}.eml"
    try:
        raw = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise api_error(404, "No such message.") from None
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return f"{int(number):06d}", message, raw


async def message(request: web.Request) -> web.Response:
    """One message: its headers, its text part, and its HTML part in a sandboxed frame."""
    number, parsed, _raw = await _load(request)
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    page = _template(_MESSAGE).render(
        number=number,
        prefix=PREFIX,
        subject=str(parsed.get("Subject", "(no subject)")),
        headers=[(name, str(parsed[name])) for name in SHOWN_HEADERS if name in parsed],
        text=text.get_content() if text is not None else None,
        has_html=html is not None,
    )
    return web.Response(text=page, content_type="text/html")


async def message_html(request: web.Request) -> web.Response:
    """The HTML part as the recipient's client would show it, without scripts or requests."""
    _number, parsed, _raw = await _load(request)
    html = parsed.get_body(("html",))
    if html is None:
        raise api_error(404, "This message has no HTML part.")
    response = web.Response(text=html.get_content(), content_type="text/html")
    response.headers["Content-Security-Policy"] = _HTML_PART_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


async def message_raw(request: web.Request) -> web.Response:
    """The stored .eml file as it was received."""
    _number, _parsed, raw = await _load(request)
    return web.Response(body=raw, content_type="text/plain", charset="utf-8")


def add_routes(app: web.Application) -> None:
    """Development only: the caller adds these when `settings.development`."""
    app.router.add_get(f"{PREFIX}/", mailbox)
    app.router.add_get(PREFIX, mailbox)
    app.router.add_post(f"{PREFIX}/clear/", clear)
    app.router.add_get(f"{PREFIX}/{{number}}/", message)
    app.router.add_get(f"{PREFIX}/{{number}}/html", message_html)
    app.router.add_get(f"{PREFIX}/{{number}}/raw", message_raw)
