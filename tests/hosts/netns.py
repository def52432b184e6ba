"""Hosts made of network namespaces on this machine, for the tests that spread a deployment.

Each host is a namespace joined to the root namespace by a veth pair on a /24 of its own
(10.231.N.0/24: the root's end is .1, the host's .2). The root namespace plays the third host,
the one with PostgreSQL, Redis, RabbitMQ and the SMTP server: those listen on 127.0.0.1 only,
so a `socat` per service and host listens on the root's end of the veth and forwards to them.

The forwarders stand in for the network path to those servers. A server notices a silent peer
only through TCP (keepalives, `tcp_user_timeout`) or its own protocol (AMQP heartbeats, the
Redis broker's worker heartbeats); the forwarders' sockets towards the hosts are given what a
server should be given (keepalive after 5 s idle, TCP_USER_TIMEOUT 10 s), and when one gives up
on a host it closes its connection to the server, which then sees that client go.

Everything made is removed on exit, whatever happened: processes (by process group), the
forwarders, the veth pairs and the namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

PREFIX = "r2fh"  # names of namespaces and veths made here, so a crashed run's can be found
# TCP_USER_TIMEOUT (level IPPROTO_TCP = 6, option 18), in ms: unacknowledged data to a host for
# this long ends the connection (a host cut off with replies on their way to it).
USER_TIMEOUT_MS = 10_000
KEEPALIVE = "keepalive,keepidle=5,keepintvl=2,keepcnt=3"


class Unavailable(RuntimeError):
    """Namespaces, veths or socat cannot be had here; the message says what failed."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise Unavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _routes() -> str:
    return subprocess.run(
        ["ip", "-4", "route", "show"], capture_output=True, text=True, timeout=30
    ).stdout


def check() -> None:
    """Raises `Unavailable` (saying why) unless namespaces and veths can be made here."""
    if os.geteuid() != 0:
        raise Unavailable("not root: network namespaces need CAP_NET_ADMIN")
    for tool in ("ip", "socat"):
        if shutil.which(tool) is None:
            raise Unavailable(f"`{tool}` is not installed")


def remove_leftovers() -> None:
    """Deletes the namespaces and veths of an earlier run of these tests that died (so two runs
    of them must not overlap on one machine)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{PREFIX}-"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30)
    for line in links.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)


@dataclass
class Host:
    """One namespace: `address` is the host's own, `gateway` the root's end of its veth (where
    the servers are reached from it)."""

    name: str
    veth: str  # the root namespace's end
    gateway: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(
        self, argv: Sequence[str], env: Mapping[str, str], log: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Starts `argv` inside the namespace, in a process group of its own."""
        process = start(["ip", "netns", "exec", self.name, *argv], env, log)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """Stops every process started on this host (SIGTERM, then SIGKILL)."""
        for process in self.processes:
            stop(process, wait=15)

    def cut(self) -> None:
        """Takes the host off the network: its veth goes down at both ends (no RST, no FIN:
        what a pulled cable or a dead switch does)."""
        _ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        _ip("link", "set", self.veth, "up")


def start(
    argv: Sequence[str], env: Mapping[str, str], log: str | None = None
) -> subprocess.Popen[bytes]:
    """Starts `argv` in a process group of its own, its output appended to `log`."""
    if log is None:
        return subprocess.Popen(
            argv,
            env=dict(env),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, env=dict(env), start_new_session=True, stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 30) -> None:
    """Signals the process group; SIGKILL when it outlives `wait` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _free_subnets(count: int) -> list[int]:
    """Third octets N of 10.231.N.0/24 that no route of this machine touches."""
    routes = _routes()
    taken = set()
    for line in routes.split("\n"):
        first = line.split(" ")[0]
        with contextlib.suppress(ValueError):
            taken.add(ipaddress.ip_network(first if "/" in first else f"{first}/32", strict=False))
    free = []
    for n in range(140, 250):
        net = ipaddress.ip_network(f"10.231.{n}.0/24")
        if not any(net.overlaps(other) for other in taken if other.version == 4):
            free.append(n)
        if len(free) == count:
            return free
    raise Unavailable("no free 10.231.N.0/24 for the hosts")


@contextlib.contextmanager
def hosts(names: Sequence[str], forward_ports: Sequence[int]) -> Iterator[dict[str, Host]]:
    """Namespaces `names`, each with its veth, and socat forwarders on each host's gateway for
    `forward_ports` (to the same port on 127.0.0.1). Removes everything on exit."""
    check()
    remove_leftovers()
    tag = uuid.uuid4().hex[:4]
    made: dict[str, Host] = {}
    forwarders: list[subprocess.Popen[bytes]] = []
    try:
        for name, n in zip(names, _free_subnets(len(names)), strict=True):
            host = Host(
                name=f"{PREFIX}-{tag}-{name}",
                veth=f"{PREFIX}{tag}{name}0",
                gateway=f"10.231.{n}.1",
                address=f"10.231.{n}.2",
            )
            made[name] = host
            inner = f"{PREFIX}{tag}{name}1"
            _ip("netns", "add", host.name)
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", host.name)
            _ip("addr", "add", f"{host.gateway}/24", "dev", host.veth)
            _ip("link", "set", host.veth, "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", inner)
            _ip("-n", host.name, "link", "set", inner, "up")
            _ip("-n", host.name, "link", "set", "lo", "up")
            for port in forward_ports:
                forwarders.append(
                    subprocess.Popen(
                        [
                            "socat",
                            f"TCP-LISTEN:{port},bind={host.gateway},fork,reuseaddr,{KEEPALIVE},"
                            f"sockopt-int=6:18:{USER_TIMEOUT_MS}",
                            f"TCP:127.0.0.1:{port}",
                        ],
                        start_new_session=True,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        yield made
    finally:
        for host in made.values():
            for process in host.processes:
                stop(process, signal.SIGKILL, wait=10)
        for forwarder in forwarders:
            stop(forwarder, signal.SIGKILL, wait=10)
        for host in made.values():
            with contextlib.suppress(Unavailable):
                _ip("link", "del", host.veth)
            with contextlib.suppress(Unavailable):
                _ip("netns", "del", host.name)
