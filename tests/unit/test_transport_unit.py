"""Connection details that a real nats-server cannot be made to show on demand.

A scripted server (a plain TCP listener this test drives byte by byte) plays the server's
side, so we can delay a payload, send a desynchronised stream, or shrink max_payload.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Iterator, List

import pytest

from resonate_sync.transport import (
    AuthorizationError,
    Connection,
    ConnectionClosedError,
    Msg,
    NatsConnectionError,
    NatsTransport,
    redact_url,
)
from resonate_sync.backoff import retry_delay
from resonate_sync.transport.protocol import decode_headers

INFO: Dict[str, Any] = {"server_id": "scripted", "version": "2.15.1", "proto": 1, "headers": True, "max_payload": 1048576}


class ScriptedServer:
    """One-connection NATS server whose every byte the test decides."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"nats://127.0.0.1:{self.listener.getsockname()[1]}"
        self._pool = ThreadPoolExecutor(1)
        self.sock: socket.socket

    def accept(self, info: Dict[str, Any] = INFO, answer: bytes = b"PONG\r\n") -> "Future[bytes]":
        """In the background: accept, send INFO, read CONNECT+PING, send ``answer``; result = CONNECT line."""

        def run() -> bytes:
            self.sock, _ = self.listener.accept()
            self.sock.sendall(b"INFO " + json.dumps(info).encode() + b"\r\n")
            got = self.read_until(b"PING\r\n")
            self.sock.sendall(answer)
            return got

        return self._pool.submit(run)

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        data = b""
        while marker not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.listener.close()
        if hasattr(self, "sock"):
            self.sock.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def connected(scripted: ScriptedServer) -> Iterator[Connection]:
    handshake = scripted.accept()
    conn = Connection(scripted.url, ping_interval=60)
    conn.connect()
    handshake.result(5)
    yield conn
    conn.close()


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class TestImport:
    CHECK = (
        "from resonate_sync.transport import Connection\n"
        "import pkg_resources\n"
        "print(pkg_resources.get_distribution('pynats2').version)\n"
        "Connection('nats://127.0.0.1:1')\n"
    )

    def run_python(self, code: str, **env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def test_pynats2_imports_without_pkg_resources(self):
        """Where setuptools has no pkg_resources (Python >= 3.12 venvs), a shim lets pynats2 import and run."""
        blocked = "import sys; sys.modules['pkg_resources'] = None\n"  # makes `import pkg_resources` fail
        assert self.run_python(blocked + self.CHECK) == "0.9.0"

    def test_pynats2_imports_when_pkg_resources_is_broken(self, tmp_path):
        """An old setuptools on Python >= 3.12 fails inside pkg_resources (AttributeError): shimmed too."""
        (tmp_path / "pkg_resources.py").write_text("raise AttributeError(\"no attribute 'ImpImporter'\")\n")
        path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
        assert self.run_python(self.CHECK, PYTHONPATH=path) == "0.9.0"


class TestConnect:
    def test_connect_announces_protocol_1_with_headers(self, scripted):
        """CONNECT asks for protocol 1, headers and no-responders, with credentials from the URL."""
        handshake = scripted.accept()
        conn = Connection(scripted.url.replace("nats://", "nats://me:p%40ss@"))
        conn.connect()
        options = json.loads(handshake.result(5).split(b"\r\n")[0][len(b"CONNECT ") :])
        conn.close()
        assert options["protocol"] == 1 and options["headers"] and options["no_responders"]
        assert (options["user"], options["pass"]) == ("me", "p@ss")
        assert options["verbose"] is False

    def test_authorization_error_fails_connect(self, scripted):
        """-ERR 'Authorization Violation' in answer to CONNECT raises AuthorizationError from connect()."""
        scripted.accept(answer=b"-ERR 'Authorization Violation'\r\n")
        conn = Connection(scripted.url.replace("nats://", "nats://me:bad@"))
        with pytest.raises(AuthorizationError, match="refused the credentials: Authorization Violation") as info:
            conn.connect()
        assert "me:***@" in str(info.value) and "bad" not in str(info.value)

    def test_silent_server_fails_connect_after_connect_timeout(self, scripted):
        """A listener that never sends INFO fails connect() after connect_timeout, naming the URL."""
        conn = Connection(scripted.url, connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(NatsConnectionError, match=f"{scripted.url}: no answer within 0.2 s"):
            conn.connect()
        assert time.monotonic() - started < 1.0


class TestReader:
    def test_payload_arriving_late_is_still_delivered(self, scripted, connected):
        """A payload that arrives well after its MSG line is waited for, not dropped (pynats2 lost it after 1 s)."""
        got: List[Msg] = []
        connected.subscribe("s", callback=got.append)
        scripted.read_until(b"SUB s 1\r\n")
        scripted.sock.sendall(b"MSG s 1 r.1 5\r\n")
        time.sleep(1.2)
        scripted.sock.sendall(b"hello\r\n")
        wait_for(lambda: got)
        assert (got[0].subject, got[0].reply, got[0].payload) == ("s", "r.1", b"hello")
        assert connected.connected

    def test_messages_split_at_every_byte_are_parsed(self, scripted, connected):
        """The parser copes with frames cut anywhere (here: one byte per send)."""
        got: List[Msg] = []
        connected.subscribe("s", callback=got.append)
        scripted.read_until(b"SUB s 1\r\n")
        stream = b"MSG s 1 3\r\nabc\r\nHMSG s 1 r 18 21\r\nNATS/1.0\r\nA: b\r\n\r\nxyz\r\n"
        for i in range(len(stream)):
            scripted.sock.sendall(stream[i : i + 1])
        wait_for(lambda: len(got) == 2)
        assert [(m.payload, m.reply, m.headers) for m in got] == [(b"abc", "", None), (b"xyz", "r", {"A": "b"})]

    def test_err_does_not_stop_the_reader(self, scripted, connected):
        """A non-fatal -ERR is recorded and messages after it are still delivered."""
        got: List[Msg] = []
        connected.subscribe("s", callback=got.append)
        scripted.read_until(b"SUB s 1\r\n")
        scripted.sock.sendall(b"-ERR 'Permissions Violation for Publish to \"x\"'\r\nMSG s 1 2\r\nok\r\n")
        wait_for(lambda: got)
        assert connected.last_server_error == 'Permissions Violation for Publish to "x"'
        assert connected.connected

    def test_desynchronised_stream_disconnects(self, scripted, connected):
        """A payload not followed by CRLF means the stream is corrupt: the connection is dropped, not guessed at."""
        lost = threading.Event()
        connected._on_disconnect = lambda reason: lost.set()
        connected.subscribe("s", callback=lambda m: None)
        scripted.read_until(b"SUB s 1\r\n")
        scripted.sock.sendall(b"MSG s 1 2\r\nabc\r\n")
        assert lost.wait(5)
        assert "protocol error" in (connected.last_disconnect_reason or "")
        with pytest.raises(ConnectionClosedError):
            connected.publish("s", b"x")

    def test_server_ping_is_answered(self, scripted, connected):
        """The server's PING gets a PONG (else it would drop us as stale)."""
        scripted.sock.sendall(b"PING\r\n")
        assert scripted.read_until(b"PONG\r\n").endswith(b"PONG\r\n")


class TestPublish:
    def test_publish_writes_one_whole_frame(self, scripted, connected):
        """PUB line, payload and CRLF go out together, byte for byte."""
        connected.publish("subj", b"\x00\xff\r\n", reply="inbox.1")
        assert scripted.read_until(b"\r\n\x00\xff\r\n\r\n") == b"PUB subj inbox.1 4\r\n\x00\xff\r\n\r\n"

    def test_max_payload_comes_from_info(self, scripted):
        """The limit is the server's INFO max_payload; going over raises ValueError and writes nothing."""
        scripted.accept(info={**INFO, "max_payload": 10})
        conn = Connection(scripted.url, ping_interval=60)
        conn.connect()
        with pytest.raises(ValueError, match="exceeds the server's max_payload of 10 bytes"):
            conn.publish("s", b"x" * 11)
        conn.publish("s", b"y" * 10)
        assert scripted.read_until(b"yyyy\r\n").startswith(b"PUB s 10\r\n")
        conn.close()

    def test_max_payload_changes_are_announced(self, scripted):
        """on_max_payload hears the first INFO's max_payload and each later change, not repeats."""
        seen: List[Any] = []
        scripted.accept(info={**INFO, "max_payload": 10})
        conn = Connection(scripted.url, ping_interval=60, on_max_payload=lambda old, new: seen.append((old, new)))
        conn.connect()
        assert seen == [(None, 10)]
        for max_payload in (10, 5):
            scripted.sock.sendall(b"INFO " + json.dumps({**INFO, "max_payload": max_payload}).encode() + b"\r\n")
        wait_for(lambda: seen == [(None, 10), (10, 5)])
        assert conn.max_payload == 5
        conn.close()

    def test_a_failing_max_payload_callback_is_logged_and_the_connection_goes_on(self, scripted, caplog):
        """on_max_payload raising (at connect or on the reader thread) neither fails the connect nor stops the reader."""

        def fail(old: Any, new: int) -> None:
            raise RuntimeError("boom")

        scripted.accept(info={**INFO, "max_payload": 10})
        conn = Connection(scripted.url, ping_interval=60, on_max_payload=fail)
        conn.connect()
        scripted.sock.sendall(b"INFO " + json.dumps({**INFO, "max_payload": 5}).encode() + b"\r\n")
        wait_for(lambda: conn.max_payload == 5)
        conn.publish("s", b"y" * 5)
        assert scripted.read_until(b"yyyyy\r\n").startswith(b"PUB s 5\r\n")
        assert conn.connected and caplog.text.count("on_max_payload callback failed") == 2
        conn.close()

    @pytest.mark.parametrize("subject", ["", "a b", "a\r\nPUB"])
    def test_bad_subject_is_refused(self, connected, subject):
        """A subject with whitespace would corrupt the protocol stream: ValueError."""
        with pytest.raises(ValueError, match="invalid NATS subject"):
            connected.publish(subject, b"x")


class TestHelpers:
    def test_redact_url_hides_passwords_and_tokens(self):
        """Credentials never reach logs or error messages."""
        assert redact_url("nats://u:p@h:4222") == "nats://u:***@h:4222"
        assert redact_url("nats://tok@h:4222") == "nats://***@h:4222"
        assert redact_url("nats://h:4222") == "nats://h:4222"

    def test_decode_headers_with_status(self):
        """A status line becomes Status/Description; repeated keys are joined."""
        raw = b"NATS/1.0 503 No Responders\r\nA: 1\r\nA: 2\r\n\r\n"
        assert decode_headers(raw) == {"Status": "503", "Description": "No Responders", "A": "1, 2"}


def test_the_reconnect_delay_stays_capped_however_long_nats_is_gone():
    """2.0 ** 1024 overflows a float: after ~17 minutes of attempts the delay must still be the cap."""
    transport = NatsTransport("nats://127.0.0.1:1", "s", lambda request: None, busy_reply=(503, "busy", b""), reconnect_backoff=(0.1, 2.0))
    for attempt in (0, 10, 1023, 1024, 10**6):
        assert 0.05 <= transport._delay(attempt) <= 2.0


def test_retry_delay_doubles_to_its_cap_and_never_overflows():
    assert [retry_delay(n, 0.1, 1.0) for n in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert retry_delay(10**6, 0.1, 1.0) == 1.0
    assert all(0.5 <= retry_delay(3, 0.25, 2.0, jitter=True) <= 2.0 for _ in range(100))
