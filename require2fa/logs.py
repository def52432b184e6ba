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
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
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


def _add_process(name: str) -> structlog.typing.Processor:
    def add(
        logger: object, method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event.setdefault("process", name)
        return event

    return add
