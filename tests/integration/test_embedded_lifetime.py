"""An embedded nats-server never outlives the resonate process that started it."""

import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class TestEmbeddedLifetime:
    def test_kill_9_of_resonate_dev_takes_the_embedded_nats_server_down(self, tmp_path):
        """After `kill -9` of `resonate dev`, its embedded nats-server exits too (no orphan holding the port)."""
        port = free_port()
        resonate = os.path.join(os.path.dirname(sys.executable), "resonate")
        proc = subprocess.Popen(
            [resonate, "dev", "--api-nats-addr", f"nats://127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            assert wait_for(lambda: listening(port), 20), "the embedded nats-server never listened"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert wait_for(lambda: not listening(port), 10), "the embedded nats-server outlived its parent"
        finally:
            if proc.poll() is None:
                proc.kill()
