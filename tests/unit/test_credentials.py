"""What a connection proves with an NKey seed file or a ``.creds`` file, read and signed locally."""

from __future__ import annotations

import base64
import os

import nkeys
import pytest

from resonate_sync.transport.credentials import CredentialsError, NatsCredentials

SEED = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
PUBLIC = nkeys.from_seed(SEED.encode()).public_key.decode()
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVIn0.c2ln"
CREDS = (
    f"-----BEGIN NATS USER JWT-----\n{JWT}\n------END NATS USER JWT------\n\n"
    "************************* IMPORTANT *************************\n\n"
    f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
)


def verifies(public: str, nonce: str, sig: str) -> bool:
    """Whether ``sig`` (base64url, no padding) is ``public``'s ed25519 signature of ``nonce``."""
    raw = base64.b32decode(public + "=" * (-len(public) % 8))[1:-2]
    from nacl.signing import VerifyKey

    VerifyKey(raw).verify(nonce.encode(), base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    return True


class TestNKeySeedFile:
    @pytest.mark.parametrize("text", [
        f"{SEED}\n",
        f"  {SEED}  ",
        f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n",
    ])  # fmt: skip
    def test_signs_the_nonce_with_the_seed(self, tmp_path, text):
        """A bare or decorated seed file yields the public key and its signature of the nonce, base64url unpadded."""
        path = tmp_path / "user.nk"
        path.write_text(text)
        fields = NatsCredentials(nkey=str(path)).connect_fields("n0nce-ABC")
        assert set(fields) == {"nkey", "sig"} and fields["nkey"] == PUBLIC
        assert "=" not in fields["sig"] and "+" not in fields["sig"] and "/" not in fields["sig"]
        assert verifies(PUBLIC, "n0nce-ABC", fields["sig"])

    def test_an_account_seed_is_not_a_user(self, tmp_path):
        """Only user seeds (SU…) sign in as users."""
        path = tmp_path / "account.nk"
        path.write_text(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT).decode())
        with pytest.raises(CredentialsError, match="no NKey user seed"):
            NatsCredentials(nkey=str(path)).check()

    def test_a_mistyped_seed_is_malformed(self, tmp_path):
        """A changed character breaks the checksum: malformed, not a different identity."""
        path = tmp_path / "typo.nk"
        path.write_text(SEED[:30] + ("A" if SEED[30] != "A" else "B") + SEED[31:])
        with pytest.raises(CredentialsError, match="malformed") as info:
            NatsCredentials(nkey=str(path)).check()
        assert str(path) in str(info.value) and SEED[:30] not in str(info.value)


class TestCredsFile:
    def test_sends_the_jwt_and_signs_with_its_seed(self, tmp_path):
        """A .creds file gives the user JWT and the seed's signature of the nonce."""
        path = tmp_path / "user.creds"
        path.write_text(CREDS)
        fields = NatsCredentials(creds=str(path)).connect_fields("xyz")
        assert set(fields) == {"jwt", "sig"} and fields["jwt"] == JWT
        assert verifies(PUBLIC, "xyz", fields["sig"])

    @pytest.mark.parametrize("text, missing", [
        (CREDS.split("\n\n", 1)[1], "no NATS USER JWT block"),
        (CREDS.split("\n\n", 1)[0], "no USER NKEY SEED block"),
        ("", "no NATS USER JWT and USER NKEY SEED block"),
    ])  # fmt: skip
    def test_a_missing_block_is_named(self, tmp_path, text, missing):
        """A .creds file without its JWT or seed block is refused, naming the file and the block."""
        path = tmp_path / "broken.creds"
        path.write_text(text)
        with pytest.raises(CredentialsError, match=missing) as info:
            NatsCredentials(creds=str(path)).check()
        assert str(path) in str(info.value) and SEED not in str(info.value) and JWT not in str(info.value)

    def test_unreadable_file_is_named(self, tmp_path):
        """A file that cannot be read is refused with the file's name and the reason."""
        with pytest.raises(CredentialsError, match="cannot read .*missing.creds.*No such file"):
            NatsCredentials(creds=str(tmp_path / "missing.creds")).check()


def test_one_identity_at_most():
    """A .creds file and a seed file together are refused: the server would see only one of them."""
    with pytest.raises(CredentialsError, match="not both"):
        NatsCredentials(creds="a.creds", nkey="b.nk")
    assert not NatsCredentials() and NatsCredentials().connect_fields("n") == {}
