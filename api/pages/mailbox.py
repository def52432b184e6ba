"""The development mailbox: what the local SMTP sink received, at `/_dev/mailbox/`.

The sink (`commands.devstack.MailSink`) stores each message as `<data_dir>/mail/NNNNNN.eml`.
These pages list those files, newest first, and show one: headers, the text part, and the HTML
part in a sandboxed frame. They exist only in development: `create_app` adds them then and
never otherwise. They read files and write nothing.
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

PREFIX = "/_dev/mailbox"
PAGE_SIZE = 50
_NAME = re.compile(r"^[0-9]{1,12}$")
# The HTML part is someone else's markup: no scripts, no requests out, only its own styles.
_HTML_PART_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"

_LIST = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mailbox</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #2b2233; }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: .35rem .6rem; }
tr:nth-child(even) { background: #f4f3f7; } .muted { color: #80708f; }
</style></head><body>
<h1>Mailbox</h1>
<p class="muted">{{ total }} message{{ "" if total == 1 else "s" }} in {{ mail_dir }}</p>
{% if rows %}
<table>
<tr><th>#</th><th>Date</th><th>To</th><th>Subject</th></tr>
{% for row in rows %}
<tr><td><a href="{{ prefix }}/{{ row.number }}/">{{ row.number }}</a></td>
<td class="muted">{{ row.date }}</td><td>{{ row.to }}</td>
<td><a href="{{ prefix }}/{{ row.number }}/">{{ row.subject }}</a></td></tr>
{% endfor %}
</table>
{% if older %}<p><a href="{{ prefix }}/?before={{ older }}">Older messages</a></p>{% endif %}
{% else %}
<p>No messages yet.</p>
{% endif %}
</body></html>
"""

_MESSAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ subject }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #2b2233; }
dt { font-weight: 600; float: left; clear: left; width: 7rem; } dd { margin: 0 0 .3rem 7rem; }
pre { white-space: pre-wrap; background: #f4f3f7; padding: 1rem; }
iframe { width: 100%; height: 40rem; border: 1px solid #e2dee6; }
</style></head><body>
<p><a href="{{ prefix }}/">&larr; Mailbox</a> &middot;
<a href="{{ prefix }}/{{ number }}/raw">Raw</a></p>
<h1>{{ subject }}</h1>
<dl>{% for name, value in headers %}<dt>{{ name }}</dt><dd>{{ value }}</dd>{% endfor %}</dl>
{% if has_html %}<h2>HTML</h2>
<iframe sandbox src="{{ prefix }}/{{ number }}/html" title="HTML part"></iframe>{% endif %}
{% if text is not none %}<h2>Text</h2><pre>{{ text }}</pre>{% endif %}
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


def _listing(mail_dir: Path, before: int | None) -> tuple[int, list[Row], int | None]:
    numbers = _numbers(mail_dir)
    shown = [n for n in numbers if before is None or n < before][:PAGE_SIZE]
    rows = [_row(mail_dir / f"{n:06d}.eml", n) for n in shown]
    older = shown[-1] if shown and shown[-1] != numbers[-1] else None
    return len(numbers), rows, older


async def mailbox(request: web.Request) -> web.Response:
    """Lists the stored messages, newest first, `PAGE_SIZE` a page (`?before=N` for older)."""
    before_text = request.query.get("before")
    if before_text is not None and not _NAME.match(before_text):
        raise api_error(400, "before must be a message number.")
    mail_dir = _mail_dir(request)
    total, rows, older = await asyncio.to_thread(
        _listing, mail_dir, int(before_text) if before_text else None
    )
    html = _template(_LIST).render(
        total=total, rows=rows, older=older, mail_dir=str(mail_dir), prefix=PREFIX
    )
    return web.Response(text=html, content_type="text/html")


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
    return response


async def message_raw(request: web.Request) -> web.Response:
    """The stored .eml file as it was received."""
    _number, _parsed, raw = await _load(request)
    return web.Response(body=raw, content_type="text/plain", charset="utf-8")


def add_routes(app: web.Application) -> None:
    """Development only: the caller adds these when `settings.development`."""
    app.router.add_get(f"{PREFIX}/", mailbox)
    app.router.add_get(PREFIX, mailbox)
    app.router.add_get(f"{PREFIX}/{{number}}/", message)
    app.router.add_get(f"{PREFIX}/{{number}}/html", message_html)
    app.router.add_get(f"{PREFIX}/{{number}}/raw", message_raw)
