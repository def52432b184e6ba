"""structlog set-up: key-value text for people, JSON lines for machines (LOG_FORMAT).

Every process type (web, worker, clock, the commands) logs through this one configuration, our
lines and the libraries' (aiohttp, Dramatiq, APScheduler) alike, with the same keys:

    time      ISO 8601, UTC
    level     debug, info, warning, error, critical
    logger    who logged it
    process   web, worker, clock, ... (the command that runs)
    event     what happened
    request_id / message_id   in the web process, the request's; in a worker, the message's

In JSON that is one object per line; in text, `time [level] event key=value ...`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# Libraries whose INFO lines are per-connection chatter.
QUIET_LOGGERS = ("mail.log",)  # aiosmtpd, the development SMTP sink


def configure(
    log_format: str = "text",
    level: int = logging.INFO,
    *,
    process: str | None = None,
    keep_streams: bool = False,
) -> None:
    """Routes structlog and the standard library's logging through one renderer on stderr.

    `keep_streams`: keep the root logger's handlers (and so where they write) and give each our
    formatter; a Dramatiq worker process writes to a pipe that its parent reads.
    """
    _lean_records()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, timestamp_key="time")
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    ]
    if process is not None:
        shared.append(_add_process(process))
    structlog.configure(
        # filter_by_level first: a line below the level costs a level check and nothing else.
        # Our lines are rendered here and reach the standard library's logging as finished
        # text (`_Formatter` passes them through): one log record each, not a record and a copy.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
            _finished,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = _Formatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
        foreign_pre_chain=shared,
    )
    root = logging.getLogger()
    if keep_streams and root.handlers:
        for handler in root.handlers:
            handler.setFormatter(formatter)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


_FINISHED = "require2fa_finished"


def _finished(logger: object, method: str, line: Any) -> tuple[tuple[str], dict[str, Any]]:
    """The renderer's line (a str), as the standard library's logger is called with it."""
    return (line,), {"extra": {_FINISHED: True}}


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """Our lines arrive rendered; the libraries' lines are rendered here, the same way."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _FINISHED, False):
            return record.getMessage()
        return super().format(record)


def _lean_records() -> None:
    """Spares every log record the caller's file and line, which no line of ours shows: finding
    them walks up the stack (the logging HOWTO's "Optimization" section names this switch), and
    the web process writes a line per request."""
    logging._srcfile = None  # type: ignore[attr-defined]


def _add_process(name: str) -> structlog.typing.Processor:
    def add(
        logger: object, method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event.setdefault("process", name)
        return event

    return add
