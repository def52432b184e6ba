"""Where a running `require2fa dev` says what it runs on, so that the CLI beside it finds it.

`dev` writes `<data_dir>/dev.json` (mode 0600: the URLs may hold passwords) once its services
are up, with its pid and the environment its processes got (DATABASE_URL, REDIS_URL,
REDIS_NAMESPACE, SMTP_URL, BASE_URL, ...), and removes it when it stops. A command run in the
same directory with neither DATABASE_URL nor REDIS_URL set takes those values from it, while
that pid is alive: a file a killed stack left behind is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

STATE_FILE = "dev.json"
# What the CLI takes from a running stack (the two URLs decide whether it looks at all).
SHARED = (
    "ENVIRONMENT",
    "DATABASE_URL",
    "REDIS_URL",
    "BROKER_URL",
    "REDIS_NAMESPACE",
    "SMTP_URL",
    "BASE_URL",
    "DATA_DIR",
)


@contextlib.contextmanager
def published(data_dir: Path, env: Mapping[str, str]) -> Iterator[Path]:
    """Writes the state file for as long as the block runs."""
    path = data_dir / STATE_FILE
    state = {"pid": os.getpid(), "env": {name: env[name] for name in SHARED if env.get(name)}}
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(state, file, indent=2)
    path.with_suffix(".tmp").replace(path)  # whole or not at all, for a reader beside us
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def running_stack(environ: Mapping[str, str]) -> tuple[Path, dict[str, str]] | None:
    """The environment of the dev stack running beside us (state file and values), or None when
    DATABASE_URL or REDIS_URL is set, or no live stack wrote one."""
    if environ.get("DATABASE_URL") or environ.get("REDIS_URL"):
        return None
    path = Path(environ.get("DATA_DIR") or ".require2fa") / STATE_FILE
    try:
        state = json.loads(path.read_text())
        pid, env = int(state["pid"]), state["env"]
        os.kill(pid, 0)  # alive? (raises when not)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(env, dict):
        return None
    return path, {name: str(env[name]) for name in SHARED if name in env}
