"""Secure NATS connections: user/password and token in the URL, TLS with a CA and client
certificates generated here (openssl), and clear start-up failures for wrong credentials."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import quote

import pytest

from resonate_sync.config import Config
from resonate_sync.server import Server, ServerError

FAR = 4_102_444_800_000
PASSWORD = "p@ss:w/rd%1"  # characters that must be percent-encoded in a URL
TOKEN = "t0ken-s3cret"

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


# -- certificates ----------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    """``<name>.pem`` / ``<name>-key.pem``: a self-signed CA (EC P-256, strict-X.509 extensions)."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip


def make_leaf(directory: Path, name: str, ca: str, usage: str) -> None:
    """``<name>.pem`` / ``<name>-key.pem`` signed by ``ca``, for 127.0.0.1/localhost."""
    (directory / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
        "-set_serial", str(uuid.uuid4().int >> 64), "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server and a client certificate it signed, and an unrelated second CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_leaf(directory, "server", "ca", "serverAuth")
    make_leaf(directory, "client", "ca", "clientAuth")
    return directory


def tls_conf(pki: Path, verify_clients: bool) -> Path:
    conf = pki / f"nats-tls-{'mutual' if verify_clients else 'server'}.conf"
    conf.write_text(
        "tls {\n"
        f'  cert_file: "{pki / "server.pem"}"\n'
        f'  key_file: "{pki / "server-key.pem"}"\n'
        f'  ca_file: "{pki / "ca.pem"}"\n'
        f"  verify: {'true' if verify_clients else 'false'}\n"
        "  timeout: 2\n"
        "}\n"
    )
    return conf


@pytest.fixture(scope="module")
def mutual_tls_nats(pki):
    """A nats-server that requires TLS and a client certificate signed by the test CA."""
    from resonate_sync.transport.embedded import EmbeddedNatsServer

    with EmbeddedNatsServer(extra_args=["-c", str(tls_conf(pki, verify_clients=True))]) as server:
        yield server


@pytest.fixture(scope="module")
def server_tls_nats(pki):
    """A nats-server that requires TLS but no client certificate."""
    from resonate_sync.transport.embedded import EmbeddedNatsServer

    with EmbeddedNatsServer(extra_args=["-c", str(tls_conf(pki, verify_clients=False))]) as server:
        yield server


def tls_url(server: Any) -> str:
    return server.url.replace("nats://", "tls://")


def client_tls_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client-key.pem"))
    return context


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture
def serve():
    """``serve(url, **config)`` starts a Server (stopped after the test); failures propagate."""
    started: List[Server] = []

    def start(url: str, **overrides: Any) -> Server:
        config = Config(
            nats_addr=url, nats_subject=f"resonate.secure.{uuid.uuid4().hex[:8]}", embedded_nats="never", **overrides
        )
        server = Server(config, mode="dev")
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def create_and_read(client: Any, subject: str) -> Dict[str, Any]:
    pid = f"secure-{uuid.uuid4().hex[:8]}"
    created = client.call(subject, "promises.create", {"id": pid, "timeout": FAR})
    assert created["success"] is True, created
    read = client.call(subject, "promises.read", {"id": pid})
    assert read["success"] is True, read
    return read


def resonate_threads() -> List[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(("nats-", "resonate")))


def assert_fails_clearly(start: Any, url: str, *fragments: str, secret: str = "", **config: Any) -> ServerError:
    """``start(url, **config)`` raises ServerError within 3 s, naming the URL's host:port and each
    fragment, never ``secret``, and leaves no thread of ours running."""
    before = resonate_threads()
    started = time.monotonic()
    with pytest.raises(ServerError) as info:
        start(url, **config)
    assert time.monotonic() - started < 3.0
    message = str(info.value)
    host_port = url.rsplit("@", 1)[-1].split("//")[-1]
    assert host_port in message, message
    for fragment in fragments:
        assert fragment in message, message
    if secret:
        assert secret not in message and quote(secret, safe="") not in message, message
    deadline = time.monotonic() + 5
    while resonate_threads() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resonate_threads() == before
    return info.value


# -- user/password and token -----------------------------------------------------------------


@pytest.fixture(scope="module")
def password_nats():
    from resonate_sync.transport.embedded import EmbeddedNatsServer

    with EmbeddedNatsServer(extra_args=["--user", "resonate", "--pass", PASSWORD]) as server:
        yield server


@pytest.fixture(scope="module")
def token_nats():
    from resonate_sync.transport.embedded import EmbeddedNatsServer

    with EmbeddedNatsServer(extra_args=["--auth", TOKEN]) as server:
        yield server


def with_auth(url: str, auth: str) -> str:
    return url.replace("://", f"://{auth}@", 1)


class TestUserPassword:
    def test_right_password_serves(self, password_nats, serve, nats_client, caplog):
        """nats://user:pass@host (percent-encoded) connects and serves; the password is never logged."""
        url = with_auth(password_nats.url, f"resonate:{quote(PASSWORD, safe='')}")
        with caplog.at_level("INFO"):
            server = serve(url)
        client = nats_client(password_nats.url, user="resonate", password=PASSWORD)
        create_and_read(client, server.config.nats_subject)
        assert "serving subject" in caplog.text
        assert PASSWORD not in caplog.text and quote(PASSWORD, safe="") not in caplog.text

    def test_wrong_password_fails_start(self, password_nats, serve):
        """A wrong password makes Server.start() raise ServerError at once, naming the URL (not the password)."""
        url = with_auth(password_nats.url, "resonate:wrong-password")
        assert_fails_clearly(serve, url, "refused the credentials", "Authorization Violation", secret="wrong-password")

    def test_missing_credentials_fail_start(self, password_nats, serve):
        """No credentials for a server that requires them is refused the same way."""
        assert_fails_clearly(serve, password_nats.url, "Authorization Violation")


class TestToken:
    def test_right_token_serves(self, token_nats, serve, nats_client):
        """nats://token@host connects and serves."""
        server = serve(with_auth(token_nats.url, TOKEN))
        client = nats_client(token_nats.url, token=TOKEN)
        create_and_read(client, server.config.nats_subject)

    def test_wrong_token_fails_start(self, token_nats, serve):
        """A wrong token fails start-up clearly, and the token is not in the message."""
        url = with_auth(token_nats.url, "not-the-token")
        assert_fails_clearly(serve, url, "refused the credentials", secret="not-the-token")


# -- TLS -------------------------------------------------------------------------------------


@needs_openssl
class TestTLS:
    def test_mutual_tls_serves(self, pki, mutual_tls_nats, serve, nats_client):
        """tls:// with the CA, a client certificate and key, verification on: serves over TLS."""
        server = serve(
            tls_url(mutual_tls_nats),
            nats_tls_ca=str(pki / "ca.pem"),
            nats_tls_cert=str(pki / "client.pem"),
            nats_tls_key=str(pki / "client-key.pem"),
        )
        assert server.transport._conn._socket.version().startswith("TLS")  # the live socket is encrypted
        client = nats_client(tls_url(mutual_tls_nats), tls=client_tls_context(pki))
        create_and_read(client, server.config.nats_subject)
        [ping] = [json.loads(client.request(f"$SRV.PING.resonate.{server.service.id}", b"").data)]
        assert ping["id"] == server.service.id

    def test_missing_client_certificate_fails_start(self, pki, mutual_tls_nats, serve):
        """A server that verifies clients refuses one without a certificate: start-up fails clearly."""
        assert_fails_clearly(serve, tls_url(mutual_tls_nats), "requires a TLS client certificate", nats_tls_ca=str(pki / "ca.pem"))

    def test_unknown_ca_fails_start(self, pki, server_tls_nats, serve):
        """A server certificate signed by a CA we were not given is not accepted, and start-up says so."""
        assert_fails_clearly(
            serve, tls_url(server_tls_nats), "TLS certificate was not accepted", nats_tls_ca=str(pki / "other-ca.pem")
        )

    def test_system_cas_do_not_trust_a_private_ca(self, server_tls_nats, serve):
        """Verification is on by default: with no CA configured, a private CA's certificate is refused."""
        with pytest.raises(ServerError, match="TLS certificate was not accepted"):
            serve(tls_url(server_tls_nats))

    def test_verify_false_accepts_any_server(self, server_tls_nats, serve, pki, nats_client):
        """--api-nats-tls-verify=false still encrypts but accepts an unverifiable server (tests only)."""
        server = serve(tls_url(server_tls_nats), nats_tls_verify=False)
        assert server.transport._conn._socket.version().startswith("TLS")
        client = nats_client(tls_url(server_tls_nats), tls=ssl.create_default_context(cafile=str(pki / "ca.pem")))
        create_and_read(client, server.config.nats_subject)

    def test_plain_url_to_a_tls_server_fails_start(self, server_tls_nats, serve):
        """nats:// to a server that requires TLS fails start-up with a hint to use tls://."""
        with pytest.raises(ServerError, match=r"requires TLS \(use tls://\)"):
            serve(server_tls_nats.url)

    def test_unreadable_ca_file_fails_start(self, server_tls_nats, serve, tmp_path):
        """A CA file that does not exist fails start-up naming the file."""
        missing = tmp_path / "no-such-ca.pem"
        with pytest.raises(ServerError, match="no-such-ca.pem"):
            serve(tls_url(server_tls_nats), nats_tls_ca=str(missing))

    def test_key_without_certificate_fails_start(self, pki, server_tls_nats, serve):
        """A client key without its certificate is a configuration mistake reported at start-up."""
        with pytest.raises(ServerError, match="without its certificate"):
            serve(tls_url(server_tls_nats), nats_tls_ca=str(pki / "ca.pem"), nats_tls_key=str(pki / "client-key.pem"))
