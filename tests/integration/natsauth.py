"""NATS identities made in the test: NKey pairs, and operator/account/user JWTs (nats-io/jwt v2).

nsc is not available here, so the JWTs are built from their definition: a header
``{"typ":"JWT","alg":"ed25519-nkey"}``, claims whose ``jti`` is the base32 SHA-512/256 of the
claims without it, each part base64url without padding, signed by the issuer's NKey.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict

import nkeys

NO_LIMIT = -1


class Identity:
    """An NKey pair of one role: ``seed`` (secret) and ``public`` (``U…``, ``A…``, ``O…``)."""

    def __init__(self, prefix: int) -> None:
        self.seed = nkeys.encode_seed(os.urandom(32), prefix).decode()
        self.public = nkeys.from_seed(self.seed.encode()).public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(self.seed.encode()).sign(data)


def user() -> Identity:
    return Identity(nkeys.PREFIX_BYTE_USER)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def issue(issuer: Identity, subject: str, name: str, nats: Dict[str, Any]) -> str:
    """A JWT about ``subject`` signed by ``issuer``; ``nats`` holds the role's claims (with ``type``)."""
    claims: Dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    claims["jti"] = base64.b32encode(hashlib.new("sha512_256", _compact(claims)).digest()).decode().rstrip("=")
    claims["nats"] = {**nats, "version": 2}
    signed = _b64(_compact({"typ": "JWT", "alg": "ed25519-nkey"})) + "." + _b64(_compact(claims))
    return signed + "." + _b64(issuer.sign(signed.encode()))


class Operator:
    """An operator with one account and a user of it, as nats-server's ``operator`` mode needs them."""

    def __init__(self) -> None:
        self.operator = Identity(nkeys.PREFIX_BYTE_OPERATOR)
        self.account = Identity(nkeys.PREFIX_BYTE_ACCOUNT)
        self.user = user()
        self.operator_jwt = issue(self.operator, self.operator.public, "test-operator", {"type": "operator"})
        unlimited = {"subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT}
        account_limits = {**unlimited, "imports": NO_LIMIT, "exports": NO_LIMIT, "wildcards": True,
                          "conn": NO_LIMIT, "leaf": NO_LIMIT}  # fmt: skip
        self.account_jwt = issue(
            self.operator, self.account.public, "test-account", {"type": "account", "limits": account_limits}
        )
        self.user_jwt = issue(self.account, self.user.public, "test-user", {"type": "user", **unlimited})

    def server_conf(self, directory: Path) -> Path:
        """A nats-server config trusting this operator, with the account preloaded (no resolver service)."""
        conf = directory / "nats-operator.conf"
        conf.write_text(
            f"operator: {self.operator_jwt}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n  {self.account.public}: {self.account_jwt}\n}}\n"
        )
        return conf

    def creds_file(self, path: Path) -> Path:
        """The user's ``.creds`` file, laid out as nsc writes it."""
        path.write_text(creds_text(self.user_jwt, self.user.seed))
        return path


def creds_text(user_jwt: str, seed: str) -> str:
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n"
        "\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n"
        "\n"
        "*************************************************************\n"
    )


def nkey_conf(directory: Path, public: str) -> Path:
    """A nats-server config with one NKey user."""
    conf = directory / "nats-nkey.conf"
    conf.write_text(f'authorization {{\n  users = [\n    {{ nkey: "{public}" }}\n  ]\n}}\n')
    return conf
