"""The Client and the CLI client commands over TLS and with credentials (auth-required nats-servers)."""

import uuid
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from resonate_sync import Client
from resonate_sync.cli import app
from resonate_sync.client import ConnectionFailed

# The CA, certificates and nats-servers of the server's own TLS and auth tests.
from test_secure import PASSWORD, mutual_tls_nats, password_nats, pki, serve, tls_url, with_auth  # noqa: F401
from helpers import FAR



def tls_files(pki, ca: str = "ca") -> dict:
    return {
        "tls_cacert": str(pki / f"{ca}.pem"),
        "tls_client_cert": str(pki / "client.pem"),
        "tls_client_key": str(pki / "client-key.pem"),
    }


@pytest.fixture
def tls_server(pki, mutual_tls_nats, serve):
    """A Server on a nats-server that requires TLS and a client certificate."""
    files = tls_files(pki)
    return serve(
        tls_url(mutual_tls_nats),
        nats_tls_ca=files["tls_cacert"], nats_tls_cert=files["tls_client_cert"], nats_tls_key=files["tls_client_key"],
    )  # fmt: skip


class TestClientTls:
    def test_mutual_tls(self, pki, tls_server):
        """With the CA and a client certificate, the Client talks to a server over tls://."""
        with Client(tls_server.url, tls_server.config.nats_subject, **tls_files(pki)) as client:
            pid = f"tls-{uuid.uuid4().hex[:8]}"
            assert client.promises_create(pid, FAR).created
            assert client.promises_read(pid).id == pid

    def test_unknown_ca_is_refused_clearly(self, pki, tls_server):
        """A server certificate signed by a CA the client does not trust fails at construction, saying so."""
        with pytest.raises(ConnectionFailed) as info:
            Client(tls_server.url, **tls_files(pki, ca="other-ca"))
        assert "certificate" in info.value.message and tls_server.url in info.value.message

    def test_missing_client_certificate_is_refused_clearly(self, pki, tls_server):
        """A server that verifies clients refuses a Client without a certificate, and the error says so."""
        with pytest.raises(ConnectionFailed) as info:
            Client(tls_server.url, tls_cacert=str(pki / "ca.pem"))
        assert "client certificate" in info.value.message


class TestClientCredentials:
    def test_right_password(self, password_nats, serve):
        """user:pass in the URL (percent-encoded) authenticates the Client."""
        url = with_auth(password_nats.url, f"resonate:{quote(PASSWORD, safe='')}")
        server = serve(url)
        with Client(url, server.config.nats_subject) as client:
            assert client.promises_search("*").items == []
            assert PASSWORD not in repr(client) and quote(PASSWORD, safe="") not in repr(client)

    def test_wrong_password_fails_at_construction(self, password_nats):
        """A refused password is a ConnectionFailed that says so without showing the password."""
        with pytest.raises(ConnectionFailed) as info:
            Client(with_auth(password_nats.url, "resonate:wrong-secret"))
        assert "credentials" in info.value.message and "wrong-secret" not in info.value.message


class TestCliTls:
    def test_tls_settings_come_from_the_environment(self, pki, tls_server, monkeypatch, tmp_path):
        """The client commands read RESONATE_API_NATS_TLS_* like the server does."""
        monkeypatch.chdir(tmp_path)
        files = tls_files(pki)
        env = {
            "RESONATE_API_NATS_ADDR": tls_server.url,
            "RESONATE_API_NATS_SUBJECT": tls_server.config.nats_subject,
            "RESONATE_API_NATS_TLS_CA": files["tls_cacert"],
            "RESONATE_API_NATS_TLS_CERT": files["tls_client_cert"],
            "RESONATE_API_NATS_TLS_KEY": files["tls_client_key"],
        }
        result = CliRunner().invoke(app, ["promises", "search", "--json"], env=env)
        assert result.exit_code == 0, result.output
        env["RESONATE_API_NATS_TLS_CA"] = str(tmp_path / "missing.pem")
        result = CliRunner().invoke(app, ["promises", "search"], env=env)
        assert result.exit_code == 2 and "missing.pem" in result.output
