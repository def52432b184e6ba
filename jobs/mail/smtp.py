"""One SMTP connection, opened on first use and reused for many messages; what its errors say."""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage

import aiosmtplib

from require2fa.settings import Settings

SMTP_TIMEOUT = 30.0

# Failures of the connection rather than of one message: the message is retried later.
TRANSIENT = (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError)


def describe(err: BaseException) -> str:
    """The server's reply when there is one (`550 No such user`), else the error."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused) and err.recipients:
        err = err.recipients[0]
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return f"{err.code} {err.message}"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class Smtp:
    """One SMTP connection (per `SMTP_URL`), opened on first use and reused for many messages."""

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext | None = None) -> None:
        self.target = settings.smtp
        self.tls_context = tls_context
        self.client: aiosmtplib.SMTP | None = None

    async def connect(self) -> None:
        if self.client is not None and self.client.is_connected:
            return
        target = self.target
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            use_tls=target.use_tls,
            start_tls=target.start_tls and not target.use_tls,
            username=target.username,
            password=target.password,
            timeout=SMTP_TIMEOUT,
            tls_context=self.tls_context,
        )
        await client.connect()  # greeting, EHLO, STARTTLS and AUTH as the URL asks
        self.client = client

    async def send(self, message: EmailMessage) -> None:
        assert self.client is not None
        await self.client.send_message(message)

    async def drop(self) -> None:
        """Forget a connection that failed; the next message opens a new one."""
        if self.client is not None:
            self.client.close()
            self.client = None

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            try:
                await self.client.quit()
            except TRANSIENT:
                self.client.close()
        self.client = None
