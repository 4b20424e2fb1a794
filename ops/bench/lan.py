"""Hosts on one machine: Linux network namespaces on a private bridge, each with its own address, hostname and
MEMORAG_HOME, reaching the others only through their addresses. What a host starts runs inside it; ``cut`` and
``heal`` take a host's link down and up (a partition); ``destroy`` kills every process in every namespace and
deletes them, so a run leaves nothing behind, even when it fails.

The bridge lives in a namespace of its own (the "switch"), so this machine's own network is never touched.
Needs root (``ip netns``, from iproute2). ops/bench/hosts.py and tests/test_hosts.py build deployments on it.

    python ops/bench/lan.py check      # can this machine build hosts? (one line, exit 0 or 1)
    python ops/bench/lan.py clean      # remove the hosts of runs that died without cleaning up
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "mrag"  # every namespace this module makes: mrag<pid>-<host>


class LanUnavailable(RuntimeError):
    """This machine cannot build hosts (not root, no iproute2, namespaces refused); the message says which."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why hosts cannot be built here, or None when they can (tries a namespace, removes it)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip() or made.returncode}"
    _ip("netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` (daemons included: a forked PostgreSQL, a daemonized Redis)."""
    for _ in range(5):
        pids = [int(p) for p in _ip("netns", "pids", namespace, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def clean_stale() -> list[str]:
    """Remove namespaces left by runs whose process is gone; returns their names."""
    removed = []
    for namespace in namespaces():
        owner = namespace.removeprefix(PREFIX).split("-", 1)[0]
        if owner.isdigit() and (int(owner) == os.getpid() or Path(f"/proc/{owner}").exists()):
            continue
        _kill_inside(namespace)
        _ip("netns", "del", namespace, check=False)
        removed.append(namespace)
    return removed


@dataclass
class Host:
    """One machine: a namespace, an address on the LAN, a hostname, and its own directory for everything."""

    name: str
    namespace: str
    address: str
    port: str  # the switch's end of this host's cable
    dir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.dir / "home"

    def command(self, *args: str) -> list[str]:
        """``args`` run inside this host: its network and, through a UTS namespace, its own hostname."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *args]  # fmt: skip

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The machine's environment without any MEMORAG_* setting of its own, then this host's."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEMORAG_")}
        return base | {"HOME": str(self.dir)} | self.env | (extra or {})

    def spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        """Start a long-running process here, logged to HOME/logs/<name>.log."""
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(self.command(*args), env=self.environment(env), cwd=cwd or self.dir,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        self.processes[name] = process
        return process

    def run(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
        """Run a command here to completion; raises with its output when it fails and ``check``."""
        done = subprocess.run(self.command(*args), env=self.environment(env), cwd=cwd or self.dir,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"on {self.name}: {' '.join(args)} exited {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 60) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Lan:
    """A switch namespace with a bridge, and hosts cabled to it by veth pairs."""

    def __init__(self, root: Path, subnet: str = "10.213.0.0/24") -> None:
        if why := unavailable():
            raise LanUnavailable(why)
        clean_stale()
        self.root, self.tag = root, f"{PREFIX}{os.getpid()}"
        self.network = ipaddress.ip_network(subnet)
        self.switch = f"{self.tag}-switch"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._made.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def add(self, name: str) -> Host:
        """A new host named ``name`` (also its hostname) at the next address."""
        namespace, port = f"{self.tag}-{name}", f"p{len(self.hosts)}"
        address = str(self.network.network_address + len(self.hosts) + 2)
        self._add_namespace(namespace)
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        host = Host(name, namespace, address, port, self.root / name)
        host.home.mkdir(parents=True, exist_ok=True)
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Unplug the host's cable at the switch: packets to and from it are dropped, connections stay open."""
        _ip("-n", self.switch, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", host.port, "up")

    def destroy(self) -> None:
        """Stop what every host runs (politely, then not), kill what is left in the namespaces, delete them."""
        for host in self.hosts.values():
            for name in list(host.processes):
                host.kill(name, signal.SIGTERM, timeout=10)
        for namespace in reversed(self._made):
            _kill_inside(namespace)
            _ip("netns", "del", namespace, check=False)
        self._made.clear()


@contextlib.contextmanager
def lan(root: Path, subnet: str = "10.213.0.0/24") -> Iterator[Lan]:
    network = Lan(root, subnet)
    try:
        yield network
    finally:
        network.destroy()


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "check":
        why = unavailable()
        print(f"hosts cannot be built here: {why}" if why else "hosts can be built here")
        return 1 if why else 0
    if command == "clean":
        removed = clean_stale()
        print(f"removed {len(removed)} namespace(s) left behind" + (f": {', '.join(removed)}" if removed else ""))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
