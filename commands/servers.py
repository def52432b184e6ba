"""Server processes of the embedded default: starting one (in its own session, dying with its
parent on Linux), waiting until it answers, stopping it, a leftover of a dead run, and one stack
per data directory."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger(__name__)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class DevStackError(RuntimeError):
    """An embedded server could not be started."""


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- processes ------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """Linux only: the kernel sends `sig` to the child when this thread dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: between fork and exec, only call
    # Runs in the child after it switched user: a credential change would clear the setting.
    return functools.partial(libc.prctl, _PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def spawn(
    name: str,
    argv: list[str | Path],
    log_path: Path,
    *,
    cwd: Path,
    stop_signal: int,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the servers in order.
            start_new_session=True,
            preexec_fn=die_with_parent(stop_signal),
            **as_user(user),
        )
    log.info("devstack.started", server=name, pid=process.pid, log=str(log_path))
    return process


def stop(process: subprocess.Popen[bytes], name: str, sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("devstack.kill", server=name, pid=process.pid, waited=STOP_TIMEOUT)
            process.kill()
            process.wait()
    log.info("devstack.stopped", server=name, pid=process.pid, returncode=process.returncode)


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], name: str, log_path: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise DevStackError(
                f"{name} exited with code {process.returncode} while starting; "
                f"its log, {log_path}, ends with:\n{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise DevStackError(f"{name} was not ready after {START_TIMEOUT:.0f}s; see {log_path}")
        time.sleep(0.02)


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def stop_leftover(pid_file: Path, workdir: Path, sig: int) -> None:
    """Stops a server that a killed earlier run left in `workdir` (Linux: found through /proc)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        # A server runs in its own directory; this tells it apart from an unrelated, reused pid.
        if Path(os.readlink(f"/proc/{pid}/cwd")) != workdir.resolve():
            return
        log.warning("devstack.leftover", pid=pid, workdir=str(workdir))
        os.kill(pid, sig)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def running(pid: int) -> bool:
    """Linux: the process exists and is not a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """One stack per data directory. The lock dies with its holder, which is what lets
    `stop_leftover` tell a dead run's server from a running neighbour's."""
    with (data_dir / "devstack.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise DevStackError(f"{data_dir} is in use by process {holder}") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM's default action ends the process without unwinding; raise SystemExit instead."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def raise_exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
