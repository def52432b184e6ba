"""Logs: one format with the same keys for our lines and the libraries'; a quiet SMTP sink."""

from __future__ import annotations

import io
import json
import logging
import re
import smtplib
from email.message import EmailMessage

import pytest
import structlog

from commands.devstack import MailSink
from require2fa import logs


@pytest.fixture
def restores_logging():
    """The logging set-up as it was before the test, once the test's capture is gone (ask for
    it before `capfd`): a handler left on the captured stream would write to a closed file."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def test_json_lines_have_the_same_keys_for_ours_and_the_libraries(restores_logging, capfd) -> None:
    logs.configure("json", process="web")
    structlog.get_logger("require2fa.test").info("ours", answer=42)
    logging.getLogger("aiohttp.server").warning("theirs %s", "too")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["ours", "theirs too"]
    for line in lines:
        assert {"time", "level", "logger", "process", "event"} <= set(line)
        assert line["process"] == "web"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["time"])
    assert lines[0]["answer"] == 42 and lines[1]["level"] == "warning"


def test_our_lines_go_to_the_root_handlers_as_they_are_when_written(
    restores_logging, capfd
) -> None:
    """Our lines skip the standard library's logging but still honour its root handlers: one
    added after the first line (a cached logger) gets the next ones, a handler's level holds."""
    logs.configure("json", process="web")
    log = structlog.get_logger("require2fa.test")
    later, warnings_only = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    added = [logging.StreamHandler(later), logging.StreamHandler(warnings_only)]
    added[1].setLevel(logging.WARNING)
    try:
        log.info("before")
        root.handlers.extend(added)
        log.info("after", n=1)
        log.warning("careful")
        log.debug("not at INFO")
    finally:
        for handler in added:
            root.removeHandler(handler)
    stderr = [json.loads(line)["event"] for line in capfd.readouterr().err.splitlines()]
    assert stderr == ["before", "after", "careful"]
    assert [json.loads(line)["event"] for line in later.getvalue().splitlines()] == [
        "after",
        "careful",
    ]
    assert [json.loads(line)["event"] for line in warnings_only.getvalue().splitlines()] == [
        "careful"
    ]


def test_the_smtp_sink_is_quiet(restores_logging, tmp_path, capfd) -> None:
    logs.configure("text")
    with MailSink(tmp_path / "mail") as sink:
        capfd.readouterr()  # the sink's one "started" line
        for n in range(3):
            message = EmailMessage()
            message["From"], message["To"] = "a@x.example", "b@x.example"
            message["Subject"] = f"#{n}"
            message.set_content("hello")
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
                smtp.send_message(message)
        assert len(sink.files()) == 3
        chatter = capfd.readouterr().err
    assert chatter.strip() == ""  # no per-connection or per-message lines at INFO
