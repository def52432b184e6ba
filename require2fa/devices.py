"""A session's device as a person reads it ("Chrome 131 on macOS", "Safari on iPhone"), from the
User-Agent header it signed in with (the `user-agents` library's parser)."""

from __future__ import annotations

import functools

from user_agents import parse

UNKNOWN = "Unknown device"


@functools.lru_cache(maxsize=1024)
def device_name(user_agent: str | None) -> str:
    """`{browser} {major version} on {device or OS}`; `UNKNOWN` when nothing is recognised."""
    if not user_agent:
        return UNKNOWN
    agent = parse(user_agent[:512])
    browser = str(agent.browser.family or "")
    if browser and agent.browser.version:
        browser = f"{browser} {agent.browser.version[0]}"
    device = str(agent.device.family or "")
    where = str(agent.os.family or "") if device in ("Other", "") or agent.is_pc else device
    if browser in ("Other", "") and where in ("Other", ""):
        return UNKNOWN
    if where in ("Other", ""):
        return browser
    return f"{browser} on {where}" if browser not in ("Other", "") else where
