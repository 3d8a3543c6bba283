"""NATS identities from files: an NKey seed file, or a ``.creds`` file (user JWT plus NKey seed).

A server that needs a signature puts a ``nonce`` in its INFO; CONNECT answers with ``sig``, the
nonce signed by the user's NKey (ed25519, via the ``nkeys`` package), base64url without padding,
and with either ``nkey`` (the user's public key, for NKey users listed in the server's config)
or ``jwt`` (the user JWT an account issued, for operator/JWT mode).

The files are read again at every connect, so a rotated ``.creds`` file is picked up on the
next reconnect, and the seed stays in memory only while signing. Nothing here puts a seed or
a JWT in a message: errors name the file and what is wrong with it.
"""

from __future__ import annotations

import base64
import re
from typing import Dict, Optional

import attrs
import nkeys

__all__ = ["CredentialsError", "NatsCredentials"]

_BLOCK = re.compile(r"^\s*-{3,}\s*BEGIN ([A-Z ]+?)\s*-{3,}\s*$\s*^\s*(\S+)\s*$\s*^\s*-{3,}\s*END", re.MULTILINE)


class CredentialsError(ValueError):
    """A seed or ``.creds`` file cannot be used; the message names the file and why (never its content)."""


@attrs.frozen
class NatsCredentials:
    """Where this client's NATS identity lives: ``creds`` (a ``.creds`` file) or ``nkey`` (a seed file).

    Attributes:
        creds: path of a ``.creds`` file (user JWT and seed), or None.
        nkey: path of a file holding an NKey user seed (``SU…``), or None.
    """

    creds: Optional[str] = None
    nkey: Optional[str] = None

    def __attrs_post_init__(self) -> None:
        if self.creds and self.nkey:
            raise CredentialsError(
                f"give either a .creds file ({self.creds!r}) or an NKey seed file ({self.nkey!r}), not both"
            )

    def __bool__(self) -> bool:
        return bool(self.creds or self.nkey)

    def describe(self) -> str:
        """Which file proves the identity, for messages: ``the .creds file '…'``, or ``""`` for none."""
        if self.creds:
            return f"the .creds file {self.creds!r}"
        return f"the NKey seed file {self.nkey!r}" if self.nkey else ""

    def check(self) -> None:
        """Read the files now, so a missing or malformed one fails at start-up (CredentialsError)."""
        self.connect_fields("")

    def connect_fields(self, nonce: str) -> Dict[str, str]:
        """The CONNECT fields that prove this identity for ``nonce``: ``sig`` plus ``jwt`` or ``nkey``."""
        if self.creds:
            user_jwt, seed = _read_creds(self.creds)
            return {"jwt": user_jwt, "sig": _sign(seed, nonce, self.creds)}
        if self.nkey:
            seed = _read_seed(self.nkey)
            key_pair = _key_pair(seed, self.nkey)
            try:
                return {"nkey": key_pair.public_key.decode(), "sig": _encode_sig(key_pair.sign(nonce.encode()))}
            finally:
                key_pair.wipe()
        return {}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CredentialsError(f"cannot read {path!r}: {reason}") from None


def _read_seed(path: str) -> str:
    """The seed of a seed file: its one ``S…`` line, or its seed block (as nsc decorates them)."""
    text = _read(path)
    blocks = _blocks(text)
    if blocks:
        return next((value for kind, value in blocks.items() if kind.endswith("NKEY SEED")), "")
    return next((line.strip() for line in text.splitlines() if line.strip().startswith("S")), "")


def _read_creds(path: str) -> "tuple[str, str]":
    blocks = _blocks(_read(path))
    user_jwt, seed = blocks.get("NATS USER JWT"), blocks.get("USER NKEY SEED")
    if not user_jwt or not seed:
        missing = " and ".join(
            name for name, value in (("NATS USER JWT", user_jwt), ("USER NKEY SEED", seed)) if not value
        )
        raise CredentialsError(f"{path!r} is not a NATS .creds file: no {missing} block")
    if user_jwt.count(".") != 2:
        raise CredentialsError(f"{path!r}: its NATS USER JWT block holds no JWT")
    return user_jwt, seed


def _blocks(text: str) -> Dict[str, str]:
    return {kind: value for kind, value in _BLOCK.findall(text)}


def _key_pair(seed: str, path: str) -> nkeys.KeyPair:
    if not seed.startswith("SU"):
        raise CredentialsError(f"{path!r} holds no NKey user seed (a line starting with SU)")
    # nkeys does not check the checksum: a mistyped seed would sign as another user, and the
    # server's "authorization violation" would not say the file is wrong.
    try:
        raw = base64.b32decode(seed + "=" * (-len(seed) % 8))
        valid = len(raw) == 36 and nkeys.crc16(raw[:-2]).to_bytes(2, "little") == raw[-2:]
    except ValueError:  # binascii.Error
        valid = False
    if not valid:
        raise CredentialsError(f"{path!r}: the NKey user seed is malformed (bad checksum or length)")
    try:
        return nkeys.from_seed(bytearray(seed.encode()))
    except (nkeys.NkeysError, ValueError, TypeError):
        raise CredentialsError(f"{path!r}: the NKey user seed is malformed") from None


def _sign(seed: str, nonce: str, path: str) -> str:
    key_pair = _key_pair(seed, path)
    try:
        return _encode_sig(key_pair.sign(nonce.encode()))
    finally:
        key_pair.wipe()


def _encode_sig(signature: bytes) -> str:
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
