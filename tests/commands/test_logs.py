"""Logs: one format with the same keys for our lines and the libraries'; a quiet SMTP sink."""

from __future__ import annotations

import json
import logging
import smtplib
from email.message import EmailMessage

import structlog

from commands.devstack import MailSink
from require2fa import logs


def test_json_lines_have_the_same_keys_for_ours_and_the_libraries(capfd) -> None:
    logs.configure("json", process="web")
    try:
        structlog.get_logger("require2fa.test").info("ours", answer=42)
        logging.getLogger("aiohttp.server").warning("theirs %s", "too")
        lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    finally:
        logs.configure("text")
    assert [line["event"] for line in lines] == ["ours", "theirs too"]
    for line in lines:
        assert {"time", "level", "logger", "process", "event"} <= set(line)
        assert line["process"] == "web" and line["time"].endswith("Z")
    assert lines[0]["answer"] == 42 and lines[1]["level"] == "warning"


def test_the_smtp_sink_is_quiet(tmp_path, capfd) -> None:
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
