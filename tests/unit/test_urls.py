"""URLs as logs and error messages show them: secrets hidden, everything else as given."""

import pytest

from resonate_sync.urls import redact_url


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("nats://u:p@h:4222", "nats://u:***@h:4222"),
            ("nats://tok@h:4222", "nats://***@h:4222"),
            ("nats://h:4222", "nats://h:4222"),
            ("tls://:only-a-password@h", "tls://:***@h"),
            ("nats://u:p%40ss@[::1]:4222", "nats://u:***@[::1]:4222"),
            ("nats://u:p@h:4222/path?q=1", "nats://u:***@h:4222/path?q=1"),
            ("nats://u:p:with:colons@h", "nats://u:***@h"),
            ("nats://u:p@h:not-a-port", "nats://u:***@h:not-a-port"),
        ],
    )
    def test_secret_hidden_rest_kept(self, url, shown):
        """The password or token becomes ***; the user name, host, port and path stay as written."""
        assert redact_url(url) == shown

    def test_not_a_url(self):
        """Text that is not a URL comes back unchanged."""
        assert redact_url("localhost:4222") == "localhost:4222"
