"""The local SMTP sink of the embedded default: every message it receives is kept whole as
`<mail_dir>/NNNNNN.eml`."""

from __future__ import annotations

import os
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from commands.servers import free_port

log = structlog.get_logger(__name__)


class _EmlWriter:
    """aiosmtpd handler: each message becomes mail_dir/NNNNNN.eml, written whole or not at all."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.last = max(
            (int(p.stem) for p in mail_dir.glob("*.eml") if p.stem.isdigit()), default=0
        )

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        tmp = self.mail_dir / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(envelope.original_content or b"")
        while True:
            self.last += 1
            path = self.mail_dir / f"{self.last:06d}.eml"
            try:
                os.link(tmp, path)  # unlike rename, never replaces a file another sink wrote
                break
            except FileExistsError:
                continue
        tmp.unlink()
        log.debug(  # one line per message would drown the development stack's output
            "mailsink.received",
            path=str(path),
            mail_from=envelope.mail_from,
            rcpt_tos=envelope.rcpt_tos,
        )
        return "250 Message accepted for delivery"


class MailSink:
    """An SMTP server on 127.0.0.1 that keeps every message it receives as an .eml file."""

    def __init__(self, mail_dir: Path, *, port: int | None = None) -> None:
        self.mail_dir = Path(mail_dir)
        self.port = port or free_port()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        # server_hostname spares a getfqdn() lookup, which can take seconds in containers.
        self._controller = Controller(
            _EmlWriter(self.mail_dir),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="require2fa-mailsink",
        )
        self._controller.start()
        log.info("devstack.started", server="smtp", port=self.port, mail_dir=str(self.mail_dir))

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
            log.info("devstack.stopped", server="smtp", port=self.port)

    def __enter__(self) -> MailSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def files(self) -> list[Path]:
        """The stored messages, oldest first."""
        return sorted(self.mail_dir.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        return [read_eml(path) for path in self.files()]


def read_eml(path: Path) -> EmailMessage:
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message
