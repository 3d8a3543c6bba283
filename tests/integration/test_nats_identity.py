"""NATS identities production uses: NKey users and operator/account/user JWTs (``.creds`` files).

Every key and JWT is made here (see ``natsauth``); the nats-servers are real, configured with an
NKey user, or with an operator whose account is preloaded.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from resonate_sync import Client
from resonate_sync.cli import app
from resonate_sync.client import ConnectionFailed
from resonate_sync.server import ServerError

from helpers import FAR
from natsauth import Operator, creds_text, nkey_conf, user
from test_secure import assert_fails_clearly, create_and_read, serve  # noqa: F401


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The NKey user the server knows, its seed file, and an operator with a user's ``.creds`` file."""
    directory = tmp_path_factory.mktemp("nats-identities")
    known = user()
    (directory / "user.nk").write_text(known.seed + "\n")
    operator = Operator()
    operator.creds_file(directory / "user.creds")
    return SimpleNamespace(dir=directory, user=known, operator=operator)


@pytest.fixture(scope="module")
def nkey_nats(keys):
    """A nats-server whose only user is ``keys.user``, by NKey."""
    from resonate_sync.transport.embedded import EmbeddedNatsServer

    with EmbeddedNatsServer(extra_args=["-c", str(nkey_conf(keys.dir, keys.user.public))]) as server:
        yield server


@pytest.fixture(scope="module")
def jwt_nats(keys):
    """A nats-server in operator mode trusting ``keys.operator``, its account preloaded (MEMORY resolver)."""
    from resonate_sync.transport.embedded import EmbeddedNatsServer

    with EmbeddedNatsServer(extra_args=["-c", str(keys.operator.server_conf(keys.dir))]) as server:
        yield server


def serve_and_talk(serve, nats_client, caplog, url: str, setting: str, option: str, path: str) -> str:
    """Serve with ``setting=path``; our Client (``option=path``) and nats-py talk to it. The log's text."""
    with caplog.at_level("DEBUG"):
        server = serve(url, **{setting: path})
        with Client(url, server.config.nats_subject, **{option: path}) as client:
            pid = f"identity-{uuid.uuid4().hex[:8]}"
            assert client.promises_create(pid, FAR).created
            assert client.promises_read(pid).id == pid
    create_and_read(nats_client(url, **{option: path}), server.config.nats_subject)
    assert "serving subject" in caplog.text
    return caplog.text


class TestNKeyUser:
    def test_server_and_client_sign_in_with_a_seed(self, keys, nkey_nats, serve, nats_client, caplog):
        """--api-nats-nkey FILE signs the server's nonce: it serves, a Client with the seed talks to
        it, and neither the seed nor anything derived from it is logged."""
        seed_file = str(keys.dir / "user.nk")
        logged = serve_and_talk(serve, nats_client, caplog, nkey_nats.url, "nats_nkey", "nkeys_seed", seed_file)
        assert keys.user.seed not in logged

    def test_unknown_seed_is_an_authorization_violation(self, keys, nkey_nats, serve, tmp_path):
        """A valid seed of a user the server does not list fails start-up as a refused identity,
        naming the seed file and never the seed."""
        stranger = user()
        seed_file = tmp_path / "stranger.nk"
        seed_file.write_text(stranger.seed)
        error = assert_fails_clearly(
            serve, nkey_nats.url, "refused the credentials", "Authorization Violation", str(seed_file),
            secret=stranger.seed, nats_nkey=str(seed_file),
        )  # fmt: skip
        assert "NKey seed file" in str(error)

    def test_no_identity_is_refused(self, nkey_nats, serve):
        """Without a seed, a server that requires one refuses the connection at start-up."""
        assert_fails_clearly(serve, nkey_nats.url, "Authorization Violation")

    @pytest.mark.parametrize("content, reason", [
        (None, "No such file"),
        ("", "holds no NKey user seed"),
        ("not a seed\n", "holds no NKey user seed"),
        ("checksum", "malformed"),
    ])  # fmt: skip
    def test_unusable_seed_file_fails_start_naming_file_and_flag(self, keys, nkey_nats, serve, tmp_path, content, reason):
        """A missing, empty or mistyped seed file fails start-up at once, naming the file and --api-nats-nkey."""
        seed_file = tmp_path / "broken.nk"
        if content == "checksum":  # one character changed: still base32, but not the seed it was
            seed = keys.user.seed
            content = seed[:20] + ("A" if seed[20] != "A" else "B") + seed[21:]
        if content is not None:
            seed_file.write_text(content)
        with pytest.raises(ServerError) as info:
            serve(nkey_nats.url, nats_nkey=str(seed_file))
        message = str(info.value)
        assert str(seed_file) in message and "--api-nats-nkey" in message and reason in message, message
        assert keys.user.seed not in message

    def test_client_with_a_wrong_seed_fails_at_construction(self, nkey_nats, tmp_path):
        """The Client reports a refused seed as ConnectionFailed saying the credentials were refused."""
        seed_file = tmp_path / "stranger.nk"
        seed_file.write_text(user().seed)
        with pytest.raises(ConnectionFailed) as info:
            Client(nkey_nats.url, nkeys_seed=str(seed_file))
        assert "refused the credentials" in info.value.message and "Authorization Violation" in info.value.message

    def test_creds_and_seed_together_are_refused(self, keys, nkey_nats, serve):
        """Two identities at once is a configuration mistake, named by both settings."""
        with pytest.raises(ServerError, match="not both") as info:
            serve(nkey_nats.url, nats_nkey=str(keys.dir / "user.nk"), nats_creds=str(keys.dir / "user.creds"))
        assert "--api-nats-nkey" in str(info.value) and "--api-nats-creds" in str(info.value)


class TestCredsFile:
    def test_server_and_client_sign_in_with_a_creds_file(self, keys, jwt_nats, serve, nats_client, caplog):
        """--api-nats-creds FILE sends the user JWT and signs the nonce; the JWT and seed are never logged."""
        creds = str(keys.dir / "user.creds")
        logged = serve_and_talk(serve, nats_client, caplog, jwt_nats.url, "nats_creds", "user_credentials", creds)
        assert keys.operator.user_jwt not in logged and keys.operator.user.seed not in logged

    def test_jwt_of_an_untrusted_account_is_refused(self, jwt_nats, serve, tmp_path):
        """A well-formed .creds file from another operator's account fails start-up as an authorization violation."""
        other = Operator()
        creds = other.creds_file(tmp_path / "other.creds")
        assert_fails_clearly(
            serve, jwt_nats.url, "refused the credentials", "Authorization Violation", str(creds),
            secret=other.user.seed, nats_creds=str(creds),
        )  # fmt: skip

    def test_seed_not_matching_the_jwt_is_refused(self, keys, jwt_nats, serve, tmp_path):
        """The JWT alone proves nothing: signed with another seed, the nonce's signature is refused."""
        creds = tmp_path / "mismatched.creds"
        creds.write_text(creds_text(keys.operator.user_jwt, user().seed))
        assert_fails_clearly(serve, jwt_nats.url, "Authorization Violation", nats_creds=str(creds))

    def test_creds_file_without_a_jwt_fails_start_naming_file_and_flag(self, keys, jwt_nats, serve, tmp_path):
        """A .creds file missing its JWT block is a start-up error naming the file, the block and the flag."""
        creds = tmp_path / "no-jwt.creds"
        creds.write_text(creds_text("", keys.operator.user.seed).replace("-----BEGIN NATS USER JWT-----\n\n", ""))
        with pytest.raises(ServerError) as info:
            serve(jwt_nats.url, nats_creds=str(creds))
        message = str(info.value)
        assert str(creds) in message and "NATS USER JWT" in message and "--api-nats-creds" in message, message
        assert keys.operator.user.seed not in message


class TestCliIdentity:
    @pytest.mark.parametrize("nats, setting, variable, file", [
        ("jwt_nats", "nats_creds", "RESONATE_API_NATS_CREDS", "user.creds"),
        ("nkey_nats", "nats_nkey", "RESONATE_API_NATS_NKEY", "user.nk"),
    ])  # fmt: skip
    def test_identity_comes_from_the_environment(self, keys, serve, monkeypatch, tmp_path, request, nats, setting,
                                                 variable, file):  # fmt: skip
        """The client commands read RESONATE_API_NATS_CREDS/_NKEY like the server; an unusable file exits 2
        naming it and the variable (not the server's flag: the client commands take none)."""
        monkeypatch.chdir(tmp_path)
        url = request.getfixturevalue(nats).url
        server = serve(url, **{setting: str(keys.dir / file)})
        env = {"RESONATE_API_NATS_ADDR": url, "RESONATE_API_NATS_SUBJECT": server.config.nats_subject,
               variable: str(keys.dir / file)}  # fmt: skip
        result = CliRunner().invoke(app, ["promises", "search", "--json"], env=env)
        assert result.exit_code == 0, result.output
        env[variable] = str(tmp_path / "missing")
        result = CliRunner().invoke(app, ["promises", "search"], env=env)
        assert result.exit_code == 2 and "missing" in result.output and variable in result.output
        assert "--api-nats" not in result.output
