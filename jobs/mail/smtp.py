"""One SMTP connection, opened on first use and reused for many messages; what its errors say."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

import aiosmtplib

from require2fa.emails import Message
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
        if client.is_ehlo_or_helo_needed:  # `send` looks at the extensions first
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()  # an old server: no extension
        self.client = client

    async def send(
        self, message: Message, *, ready: Callable[[], Awaitable[bool]] | None = None
    ) -> bool:
        """Sends the message's bytes as they are (not parsed, not written out again): what
        aiosmtplib's `sendmail` does, and raises as it does, with `ready` awaited between the
        envelope and the data, so that whatever it waits for (the previous email's mark) goes
        on while the server takes the envelope, and is done before the server can accept this
        message. When `ready` answers False, the envelope is reset and nothing is sent (False).

        An address that is not ASCII needs the server's SMTPUTF8 (else `SMTPNotSupported`).
        """
        client = self.client
        assert client is not None
        if message.utf8 and not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        encoding = "utf-8" if message.utf8 else "ascii"
        options = ["SMTPUTF8"] if message.utf8 else []
        if client.supports_extension("size"):
            options.insert(0, f"SIZE={len(message.data)}")  # CRLF lines already
        try:
            await client.mail(message.sender, options=options, encoding=encoding)
            try:
                await client.rcpt(message.to, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as err:
                raise aiosmtplib.SMTPRecipientsRefused([err]) from err
            if ready is not None and not await ready():
                await _reset(client)
                return False
            await client.data(message.data)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            await _reset(client)  # as `sendmail` does: the next message starts afresh
            raise
        return True

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


async def _reset(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
        await client.rset()
