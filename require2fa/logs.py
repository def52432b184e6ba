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

import json
import logging
import sys
import time

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
        _render_json
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, timestamp_key="time")
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_time,
    ]
    if process is not None:
        shared.append(_add_process(process))
    root = logging.getLogger()
    if not (keep_streams and root.handlers):
        root.handlers[:] = [logging.StreamHandler(sys.stderr)]
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
        foreign_pre_chain=shared,
    )
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Our own lines skip the standard library's logging (a record, a handler and a formatter
    # per line, and the web process writes a line per request): structlog renders them and
    # `_Lines` writes them to the root logger's streams.
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        logger_factory=_Lines,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )


class _Lines:
    """Where structlog hands our finished lines: each goes to the stream of every stream
    handler of the root logger (as the handlers are when it is written) whose level lets it
    through, under the handler's lock, so that lines of threads never interleave. A stream that
    fails is reported as the standard library reports it (`Handler.handleError`)."""

    def __init__(self, name: str = "", *_args: object) -> None:
        self.name = name  # the line's `logger` (structlog.stdlib.add_logger_name reads it)

    @staticmethod
    def _write(line: str, level: int) -> None:
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.StreamHandler) or level < handler.level:
                continue
            try:
                with handler.lock:  # type: ignore[union-attr]
                    handler.stream.write(line + handler.terminator)
                    handler.flush()
            except Exception:
                handler.handleError(logging.makeLogRecord({"msg": line, "levelno": level}))

    def debug(self, line: str) -> None:
        self._write(line, logging.DEBUG)

    def info(self, line: str) -> None:
        self._write(line, logging.INFO)

    def warning(self, line: str) -> None:
        self._write(line, logging.WARNING)

    def error(self, line: str) -> None:
        self._write(line, logging.ERROR)

    def critical(self, line: str) -> None:
        self._write(line, logging.CRITICAL)

    msg = info
    warn = warning
    err = exception = error
    fatal = critical


# JSON lines as `json.dumps` writes them, by CPython's C encoder built once instead of once per
# line: ASCII-escaped strings, no indent, `": "` and `", "`, keys in order, NaN allowed, no
# circular-reference check, and a value JSON has no type for written as its repr().
_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, repr, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def _render_json(_logger: object, _method: str, event: structlog.typing.EventDict) -> str:
    return "".join(_ENCODE(event, 0))


_last_second: tuple[int, str] = (0, "")  # the last whole second stamped, and its text


def _add_time(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """`time`: ISO 8601 in UTC to the microsecond (`2026-12-06T12:56:11.148183Z`); the
    date and time of day are formatted once per second."""
    global _last_second
    now = time.time()
    second = int(now)
    stamped = _last_second  # one read: another thread may replace it meanwhile
    if stamped[0] != second:
        stamped = _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event["time"] = f"{stamped[1]}.{int((now - second) * 1_000_000):06d}Z"
    return event


def _lean_records() -> None:
    """Spares every log record of the libraries the caller's file and line, which no line
    shows: finding them walks up the stack (the logging HOWTO's "Optimization" section names
    this switch)."""
    logging._srcfile = None


def _add_process(name: str) -> structlog.typing.Processor:
    def add(
        _logger: object, _method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event.setdefault("process", name)
        return event

    return add
