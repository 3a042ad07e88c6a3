"""Process handling for the local stack: spawn, pid files, /proc ownership, signals, ports.

Shared by the Kafka and ClickHouse halves of the stack (``deploy.kafka``,
``deploy.clickhouse``): each describes its files and command-line signature as a
``Layout``, and this module starts the server detached, finds it again by pid file or by
``/proc/<pid>/cmdline``, stops it (SIGTERM, then SIGKILL), waits for its readiness probe,
reports its status, and checks tools, ports and loopback addresses before a start.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hallstats.errors import OperationalError
from hallstats.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 20.0
_KILL_TIMEOUT = 5.0
_POLL = 0.2

# Processes started by this Python process: kept so they are reaped (no zombies that
# still look alive to kill(pid, 0)) and so Popen does not warn about dropping them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What ``status`` says about one service; ``running`` means it answered a query."""

    name: str
    address: str
    running: bool
    detail: str


class NotReady(Exception):
    """A probe got no (good) answer yet; the message says what it got instead."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one service keeps its files, and how to recognise its process.

    ``signature`` holds arguments that only our own process has on its command line
    (it includes the absolute config path), so a recycled pid or another stack's server
    is never mistaken for ours.
    """

    name: str
    root: Path
    config: Path
    data: Path
    pid_file: Path
    stdout_log: Path
    logs: tuple[Path, ...]
    signature: tuple[str, ...]


def stack_dir(settings: Settings) -> Path:
    """The stack's folder, absolute: configs, data, logs and pid files live under it."""
    return settings.stack_dir.expanduser().resolve()


# --------------------------------------------------------------------------- processes


def spawn(args: Sequence[str], layout: Layout) -> subprocess.Popen[bytes]:
    """Start detached (own session: survives our exit, and the whole group can be signalled)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.stdout_log.open("ab") as out:
        # A marker per start, so the tail shown after a failed start is read in context.
        out.write(f"=== {datetime.now(UTC).isoformat()} starting {args[0]}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(args),
            cwd=layout.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    write_atomic(layout.pid_file, f"{proc.pid}\n")
    log.debug("%s started as pid %d: %s", layout.name, proc.pid, " ".join(args))
    return proc


def find_pid(layout: Layout, *, cleanup: bool) -> int | None:
    """Our live server's pid: from the pid file, else by its command line (pid file lost)."""
    try:
        pid: int | None = int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _alive(pid) and _is_ours(pid, layout):
        return pid
    if layout.pid_file.exists() and cleanup:
        log.info("removing stale pid file %s (pid %s)", layout.pid_file, pid)
        layout.pid_file.unlink(missing_ok=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            candidate = int(entry.name)
            if candidate != os.getpid() and _is_ours(candidate, layout) and _alive(candidate):
                if cleanup:
                    write_atomic(layout.pid_file, f"{candidate}\n")
                return candidate
    return None


def _is_ours(pid: int, layout: Layout) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = raw.decode(errors="replace").split("\0")
    return all(part in args for part in layout.signature)


def _alive(pid: int) -> bool:
    """True for a running process; a zombie counts as dead (and is reaped if it is ours)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group we created; a process found another way gets it alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_process(pid: int, layout: Layout, *, graceful: bool = True) -> float:
    """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; returns the seconds it took."""
    started = time.monotonic()
    if graceful:
        _signal(pid, signal.SIGTERM)
        deadline = started + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL",
                layout.name,
                pid,
                STOP_TIMEOUT,
            )
    if _alive(pid):
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + _KILL_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            raise OperationalError(f"{layout.name}: pid {pid} is still alive after SIGKILL")
    layout.pid_file.unlink(missing_ok=True)
    return time.monotonic() - started


def stop_service(layout: Layout, progress: Progress, *, graceful: bool) -> None:
    pid = find_pid(layout, cleanup=True)
    if pid is None:
        layout.pid_file.unlink(missing_ok=True)
        progress(f"{layout.name}: not running")
        return
    progress(f"{layout.name}: stopping pid {pid}" + ("" if graceful else " with SIGKILL"))
    took = stop_process(pid, layout, graceful=graceful)
    progress(f"{layout.name}: stopped in {took:.1f} s")


def wait_until(
    what: str,
    probe: Callable[[], str],
    *,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    logs: Sequence[Path],
) -> str:
    """Poll ``probe`` until it answers; fail fast if the process we started has exited."""
    deadline = time.monotonic() + timeout
    last = "port not open yet"
    while True:
        if listening(port):
            try:
                return probe()
            except NotReady as exc:
                last = str(exc)
        if proc is not None and proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            raise OperationalError(
                f"{what}: the server exited with code {proc.returncode} while starting."
                f"{log_excerpt(logs)}"
            )
        if time.monotonic() >= deadline:
            raise OperationalError(
                f"{what} did not answer within {timeout:.0f} s (last: {last}).{log_excerpt(logs)}"
            )
        time.sleep(_POLL)


def service_status(
    layout: Layout, address: str, port: int, probe: Callable[[], str], what: str
) -> ServiceStatus:
    pid = find_pid(layout, cleanup=False)
    owner = f"pid {pid}" if pid is not None else "not started by this stack"
    if listening(port):
        try:
            return ServiceStatus(layout.name, address, True, f"{owner}, {probe()}")
        except NotReady as exc:
            problem = f"answers on the port but not as {what}: {exc}"
    else:
        problem = "port not open"
    if pid is None:
        detail = (
            "stopped"
            if problem == "port not open"
            else f"port taken by another program ({problem})"
        )
    else:
        detail = f"pid {pid} alive but not ready ({problem}); log: {layout.logs[0]}"
    return ServiceStatus(layout.name, address, False, detail)


# --------------------------------------------------------------------------- tools and ports


def require_tool(name: str, how: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise OperationalError(f"`{name}` not found on PATH. {how}")
    return found


def require_loopback(setting: str, host: str) -> None:
    if not (host.startswith("127.") or host in {"localhost", "::1", "[::1]"}):
        raise OperationalError(
            f"{setting}: the local stack only serves 127.0.0.1, got host {host!r}; "
            "point it at 127.0.0.1 or use a server you run elsewhere without `stack up`"
        )


_LISTEN_STATE = "0A"
_REACHES_LOOPBACK = {
    ipaddress.ip_address(a) for a in ("127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1")
}


def listening(port: int) -> bool:
    """Something listens where 127.0.0.1:port would reach it (cheap check before a probe).

    Read from the kernel's socket table rather than by connecting, because a bare connect
    makes ClickHouse log "Client has not sent any data" to its error log on every poll.
    """
    found_table = False
    for table, ipv6 in ((Path("/proc/net/tcp"), False), (Path("/proc/net/tcp6"), True)):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _LISTEN_STATE:
                continue
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and _proc_net_address(address, ipv6) in _REACHES_LOOPBACK:
                return True
    if found_table:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _proc_net_address(text: str, ipv6: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Decode /proc/net/tcp's address: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(text)
    if not ipv6:
        return ipaddress.IPv4Address(raw[::-1])
    return ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def require_free_port(port: int, what: str, setting: str) -> None:
    """Fail before starting if the port is held by a process that is not our server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise OperationalError(
                f"{what}: port {port} on {LOOPBACK} is in use by something that does not answer "
                f"as {what}; find it with `ss -ltnp 'sport = :{port}'` and stop it, or choose "
                f"another port ({setting})"
            ) from exc


# --------------------------------------------------------------------------- files


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` at once; ``mode=0o600`` for a file holding a secret (never
    readable by others, not even for a moment: mkstemp creates it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tail_text(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def log_excerpt(paths: Sequence[Path], lines: int = 15) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"\n--- last lines of {path} ---\n{tail_text(text, lines)}")
    return "".join(parts) if parts else f" No log output in {', '.join(map(str, paths))}."
