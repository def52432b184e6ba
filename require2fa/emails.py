"""Rendering the outbox's emails from `templates/emails/`: a subject line, an HTML part
with its CSS inlined, and a plain-text part. Pure functions over one cached Jinja2 environment.

Each email `<name>` has three templates: `<name>.subject.txt`, `<name>.html` (extends
`_base.html`) and `<name>.txt`. HTML is autoescaped, text and subject are not (they are not
HTML); a context key a template uses but the producer did not give is an error, never a blank.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import headerregistry, policy
from email.message import EmailMessage
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


# Like `email.policy.default` (headers parsed and checked, lines folded), only faster.
POLICY = policy.default.clone(header_factory=_HeaderRegistry())


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


def build_message(
    rendered: Rendered, *, to: str, message_id: str, settings: Settings
) -> EmailMessage:
    """The MIME message: text part first, then the HTML alternative.

    Raises `ValueError` for an address or header the email package refuses.
    """
    message = EmailMessage(policy=POLICY)
    message["From"] = settings.email_from
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Message-ID"] = message_id
    message["Date"] = formatdate(usegmt=True)
    # Asks auto-responders (vacation replies) not to answer.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
