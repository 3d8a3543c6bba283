"""NatsTransport and Connection against a real nats-server, with nats-py as the other side."""

from __future__ import annotations

import json
import logging
import queue
import re
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator, List

import nats.errors
import pytest

from resonate_sync.transport import Connection, NatsTransport, Request, TransportError
from resonate_sync.transport.embedded import EmbeddedNatsServer
from resonate_sync.transport.micro import Service

BUSY = b'{"kind":"error","code":503,"message":"busy"}'
BUSY_REPLY = (503, "busy", BUSY)

AUTH_CONF = """
authorization {
  users = [
    {user: svc, password: s3cret, permissions: {publish: {deny: ["forbidden"]}, subscribe: {deny: ["secret"]}}}
    {user: client, password: pw}
  ]
}
"""


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` every 10 ms until it is true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def echo(request: Request) -> None:
    request.respond(request.data)


@pytest.fixture
def subject() -> str:
    return f"test.{uuid.uuid4().hex}"


@pytest.fixture
def serve(subject: str) -> Iterator[Callable[..., NatsTransport]]:
    """``serve(url, handler=echo, **kwargs)`` starts a transport on this test's subject; stopped after."""
    transports: List[NatsTransport] = []

    def factory(url: str, handler: Callable[[Request], None] = echo, **kwargs: Any) -> NatsTransport:
        kwargs.setdefault("busy_reply", BUSY_REPLY)
        transport = NatsTransport(url, kwargs.pop("subject", subject), handler, **kwargs)
        transports.append(transport)
        return transport.start()

    yield factory
    for transport in transports:
        transport.stop(timeout=2)


@pytest.fixture
def auth_server(tmp_path: Any, nats_server_factory: Callable[..., EmbeddedNatsServer]) -> EmbeddedNatsServer:
    conf = tmp_path / "auth.conf"
    conf.write_text(AUTH_CONF)
    return nats_server_factory(["-c", str(conf)])


def with_user(url: str, user: str, password: str) -> str:
    return url.replace("nats://", f"nats://{user}:{password}@")


class TestStandby:
    """A replica's transport: connected and discoverable, taking requests only between serve() and withdraw()."""

    def test_serve_and_withdraw_open_and_close_the_subject(self, shared_nats_server, subject, nats_client):
        transport = NatsTransport(shared_nats_server.url, subject, echo, busy_reply=BUSY_REPLY)
        client = nats_client(shared_nats_server.url)
        try:
            transport.start(serve=False)
            with pytest.raises(nats.errors.NoRespondersError):
                client.request(subject, b"standing by")
            transport.serve()
            transport.serve()  # a second call changes nothing
            assert client.request(subject, b"leading").data == b"leading"
            transport.withdraw()
            with pytest.raises(nats.errors.NoRespondersError):
                client.request(subject, b"stepped down")
            transport.serve()
            assert client.request(subject, b"leading again").data == b"leading again"
        finally:
            transport.stop(timeout=2)

    def test_live_metadata_is_read_at_every_info(self, shared_nats_server, subject, nats_client):
        """$SRV.INFO and PING show a replica's role as it is now, not as it was at start."""
        role = ["standby"]
        service = Service("resonate", "1.0.0", subject, live_metadata=lambda: {"role": role[0]})
        transport = NatsTransport(shared_nats_server.url, subject, echo, busy_reply=BUSY_REPLY, service=service)
        client = nats_client(shared_nats_server.url)
        try:
            transport.start(serve=False)
            info = f"$SRV.INFO.resonate.{service.id}"
            assert json.loads(client.request(info, b"").data)["metadata"]["role"] == "standby"
            role[0] = "leader"
            assert json.loads(client.request(info, b"").data)["metadata"]["role"] == "leader"
            assert json.loads(client.request(f"$SRV.PING.resonate.{service.id}", b"").data)["metadata"]["role"] == "leader"
        finally:
            transport.stop(timeout=2)


class TestRequestReply:
    def test_echo_round_trip(self, shared_nats_server, serve, subject, nats_client):
        """A request's payload reaches the handler and the handler's bytes come back as the reply."""
        transport = serve(shared_nats_server.url)
        client = nats_client(shared_nats_server.url)
        assert client.request(subject, b"hello").data == b"hello"
        wait_until(lambda: transport.stats["in_flight"] == 0, what="the worker to finish")
        assert transport.stats["received"] == 1
        assert transport.stats["replied"] == 1

    def test_non_ascii_bytes_arrive_intact(self, shared_nats_server, serve, subject, nats_client):
        """Payload bytes are opaque: UTF-8 text and every byte value survive both directions."""
        serve(shared_nats_server.url)
        payload = "héllo ✓ 日本 \r\n".encode() + bytes(range(256))
        assert nats_client(shared_nats_server.url).request(subject, payload).data == payload

    def test_max_size_payload_round_trips(self, shared_nats_server, serve, subject, nats_client):
        """A payload of exactly the server's max_payload (1 MB) goes in and comes back whole."""
        serve(shared_nats_server.url)
        payload = bytes(range(256)) * 4096
        assert len(payload) == 1024 * 1024
        assert nats_client(shared_nats_server.url).request(subject, payload, timeout=5).data == payload

    def test_reply_over_max_payload_is_answered_with_the_error_reply(self, shared_nats_server, serve, subject, nats_client, caplog):
        """A reply NATS would not carry is replaced by too_large_reply(size, max_payload) and logged: never silence.

        The Services API stats count it as the error too_large_reply names."""
        service = Service("resonate", "1.0.0", subject)
        transport = serve(
            shared_nats_server.url,
            handler=lambda request: request.respond(b"x" * (1024 * 1024 + 1)),
            too_large_reply=lambda size, max_payload: (500, "too large", b"too large: %d > %d" % (size, max_payload)),
            service=service,
        )
        with caplog.at_level(logging.WARNING, logger="resonate_sync.transport"):
            assert nats_client(shared_nats_server.url).request(subject, b"big").data == b"too large: 1048577 > 1048576"
        assert f"the reply of 1048577 bytes to a request on {subject} exceeds the NATS max_payload" in caplog.text
        wait_until(lambda: transport.stats["in_flight"] == 0, what="the answer to be counted")
        assert transport.stats["replied"] == 1 and transport.stats["handler_errors"] == 0
        stats = service.stats.snapshot()
        assert (stats["num_requests"], stats["num_errors"], stats["last_error"]) == (1, 1, "500:too large")

    def test_handler_learns_max_payload_at_connect(self, shared_nats_server, serve, subject, nats_client):
        """on_max_payload gets the server's max_payload before the first request can arrive; each request carries it."""
        seen: List[int] = []
        transport = serve(
            shared_nats_server.url, handler=lambda request: request.respond(b"%d" % request.max_payload), on_max_payload=seen.append
        )
        assert seen == [1024 * 1024] and transport.max_payload == 1024 * 1024
        assert nats_client(shared_nats_server.url).request(subject, b"?").data == b"1048576"

    def test_request_with_headers_reaches_handler(self, shared_nats_server, serve, subject, nats_client):
        """A request carrying NATS headers (HMSG) is parsed and its payload served like any other."""
        serve(shared_nats_server.url)
        reply = nats_client(shared_nats_server.url).request(subject, b"with headers", headers={"X-Trace": "1"})
        assert reply.data == b"with headers"

    def test_message_without_reply_subject_still_calls_handler(self, shared_nats_server, serve, subject, nats_client):
        """A plain publish (no reply subject) is handled; there is just nobody to answer."""
        seen: List[bytes] = []
        transport = serve(shared_nats_server.url, handler=lambda request: seen.append(request.data) or request.respond(b"ignored"))
        nats_client(shared_nats_server.url).publish(subject, b"fire and forget")
        wait_until(lambda: seen == [b"fire and forget"], what="handler call")
        wait_until(lambda: transport.stats["in_flight"] == 0, what="handler to finish")
        assert transport.stats["replied"] == 0

    def test_handler_exception_is_logged_and_serving_goes_on(self, shared_nats_server, serve, subject, nats_client, caplog):
        """A handler that raises is logged; that request gets no reply and the next one is served."""

        def handler(request: Request) -> None:
            if request.data == b"boom":
                raise RuntimeError("boom")
            request.respond(request.data)

        transport = serve(shared_nats_server.url, handler=handler)
        client = nats_client(shared_nats_server.url)
        with pytest.raises(nats.errors.TimeoutError):
            client.request(subject, b"boom", timeout=0.3)
        assert client.request(subject, b"fine").data == b"fine"
        assert transport.stats["handler_errors"] == 1
        assert "handler failed" in caplog.text

    def test_handler_exception_gets_the_failure_reply(self, shared_nats_server, serve, subject, nats_client):
        """With a failure_reply, a handler that raises before answering gets it: the client is not left waiting."""

        def handler(request: Request) -> None:
            raise RuntimeError("boom")

        transport = serve(shared_nats_server.url, handler=handler, failure_reply=(500, "internal", b"failed"))
        assert nats_client(shared_nats_server.url).request(subject, b"x").data == b"failed"
        assert transport.stats["handler_errors"] == 1

    def test_answer_from_another_thread_after_the_handler_returned(self, shared_nats_server, serve, subject, nats_client):
        """A handler may hand its request to another thread: that thread's answer is the reply, and
        the request counts as in flight until it is given."""
        handed: "queue.Queue[Request]" = queue.Queue()
        transport = serve(shared_nats_server.url, handler=handed.put)
        pending = nats_client(shared_nats_server.url).start_requests(subject, [b"later"])
        request = handed.get(timeout=5)
        time.sleep(0.1)
        assert transport.stats["in_flight"] == 1, "the handler returned but the request is not answered yet"
        threading.Thread(target=request.respond, args=(b"answered:" + request.data,)).start()
        assert pending.result(5) == [b"answered:later"]
        wait_until(lambda: transport.stats["in_flight"] == 0, what="the request to be done")

    def test_connection_request_is_thread_safe(self, shared_nats_server, serve, subject):
        """Many threads may share one Connection for requests; each gets its own reply."""
        serve(shared_nats_server.url)
        conn = Connection(shared_nats_server.url)
        conn.connect()
        failures: List[str] = []

        def worker(n: int) -> None:
            for i in range(100):
                payload = f"{n}:{i}".encode()
                reply = conn.request(subject, payload=payload, timeout=5).payload
                if reply != payload:
                    failures.append(f"{payload!r} -> {reply!r}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        conn.close()
        assert failures == []


class TestConnectFirst:
    def test_connect_then_start_with_the_handler(self, shared_nats_server, subject, nats_client):
        """connect() opens the connection without serving (no responders yet); start(handler) then serves it."""
        transport = NatsTransport(shared_nats_server.url, subject, busy_reply=BUSY_REPLY).connect()
        try:
            assert transport.connected
            with pytest.raises(nats.errors.NoRespondersError):
                nats_client(shared_nats_server.url).request(subject, b"too early")
            transport.start(echo)
            assert nats_client(shared_nats_server.url).request(subject, b"now").data == b"now"
        finally:
            transport.stop(timeout=2)

    def test_stop_after_connect_only_closes(self, shared_nats_server, subject):
        """A transport that connected and never started closes its connection on stop()."""
        transport = NatsTransport(shared_nats_server.url, subject, busy_reply=BUSY_REPLY).connect()
        assert transport.stop(timeout=2) is True
        assert not transport.connected


class TestPublish:
    def test_sixteen_threads_publish_intact(self, shared_nats_server, serve, subject, nats_client):
        """Concurrent publishes never interleave: every message from 16 threads arrives whole."""
        transport = serve(shared_nats_server.url)
        sink = f"{subject}.sink"
        received = nats_client(shared_nats_server.url).collect(sink)
        expected = set()

        def publisher(n: int) -> None:
            for i in range(200):
                transport.publish(sink, f"{n}:{i}:".encode() + "é".encode() * (i % 50))

        for n in range(16):
            for i in range(200):
                expected.add(f"{n}:{i}:".encode() + "é".encode() * (i % 50))
        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wait_until(lambda: len(received) >= len(expected), what="all 3200 messages")
        assert sorted(m.data for m in received) == sorted(expected)

    @pytest.mark.parametrize("payload", ["text", bytearray(b"ba"), memoryview(b"mv"), None])
    def test_non_bytes_payload_is_refused_before_writing(self, shared_nats_server, serve, subject, nats_client, payload):
        """Only bytes are accepted (TypeError), and the connection stays usable."""
        transport = serve(shared_nats_server.url)
        with pytest.raises(TypeError, match="bytes"):
            transport.publish(f"{subject}.out", payload)
        assert nats_client(shared_nats_server.url).request(subject, b"still fine").data == b"still fine"
        assert transport.stats["reconnects"] == 0

    def test_oversized_payload_is_refused_before_writing(self, shared_nats_server, serve, subject, nats_client):
        """A payload over the server's max_payload raises ValueError, and the connection stays usable."""
        transport = serve(shared_nats_server.url)
        with pytest.raises(ValueError, match="max_payload"):
            transport.publish(f"{subject}.out", b"x" * (1024 * 1024 + 1))
        assert nats_client(shared_nats_server.url).request(subject, b"still fine").data == b"still fine"
        assert transport.connected and transport.stats["reconnects"] == 0

    def test_publish_many_sends_in_order_with_replies_and_headers(self, shared_nats_server, subject, nats_client):
        """publish_many delivers every message in order, each with its reply subject and headers."""
        listener = nats_client(shared_nats_server.url)
        received = listener.collect(f"{subject}.many")
        conn = Connection(shared_nats_server.url)
        conn.connect()
        try:
            conn.publish_many([(f"{subject}.many", b"%d" % n, f"r.{n}", {"N": str(n)} if n % 2 else None) for n in range(5)])
            wait_until(lambda: len(received) == 5, what="5 messages")
        finally:
            conn.close()
        assert [(m.data, m.reply, (m.headers or {}).get("N")) for m in received] == [
            (b"%d" % n, f"r.{n}", str(n) if n % 2 else None) for n in range(5)
        ]

    def test_publish_many_with_one_bad_message_sends_none(self, shared_nats_server, subject, nats_client):
        """A bad message among many is refused before any byte is written."""
        listener = nats_client(shared_nats_server.url)
        received = listener.collect(f"{subject}.none")
        conn = Connection(shared_nats_server.url)
        conn.connect()
        try:
            with pytest.raises(TypeError, match="bytes"):
                conn.publish_many([(f"{subject}.none", b"ok", "", None), (f"{subject}.none", "text", "", None)])
            conn.publish(f"{subject}.none", b"after")
            wait_until(lambda: received, what="the message after")
            assert [m.data for m in received] == [b"after"]
        finally:
            conn.close()

    def test_publish_while_disconnected_raises_transport_error(self, nats_server, serve, subject):
        """With the server gone, publish fails fast with TransportError so the caller can retry later."""
        transport = serve(nats_server.url)
        nats_server.stop()
        wait_until(lambda: not transport.connected, what="disconnect")
        with pytest.raises(TransportError, match="not connected"):
            transport.publish(f"{subject}.out", b"x")


class TestServerErrors:
    def test_permission_error_does_not_kill_the_connection(self, auth_server, serve, subject, nats_client, caplog):
        """A -ERR for a forbidden publish is logged; the connection keeps serving."""
        caplog.set_level(logging.WARNING)
        transport = serve(with_user(auth_server.url, "svc", "s3cret"))
        transport.publish("forbidden", b"nope")
        wait_until(lambda: "Permissions Violation" in caplog.text, what="the -ERR to be logged")
        client = nats_client(with_user(auth_server.url, "client", "pw"))
        assert client.request(subject, b"after -ERR").data == b"after -ERR"
        assert transport.connected and transport.stats["reconnects"] == 0

    def test_wrong_password_fails_start_quickly(self, auth_server, serve):
        """Refused credentials make start() raise TransportError at once, naming the URL but not the password."""
        started = time.monotonic()
        with pytest.raises(TransportError, match="credentials") as info:
            serve(with_user(auth_server.url, "svc", "wrong-password"))
        assert time.monotonic() - started < 2.0
        assert f"svc:***@127.0.0.1:{auth_server.port}" in str(info.value)
        assert "wrong-password" not in str(info.value)

    def test_refused_subscription_fails_start(self, auth_server, serve):
        """A subject the user may not subscribe to makes start() raise instead of serving nothing."""
        with pytest.raises(TransportError, match="refused the subscription"):
            serve(with_user(auth_server.url, "svc", "s3cret"), subject="secret")

    def test_unreachable_server_fails_start_naming_the_url(self, serve):
        """Nothing listening: start() raises TransportError naming the URL."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(TransportError, match=f"nats://127.0.0.1:{port}"):
            serve(f"nats://127.0.0.1:{port}")


class TestReconnect:
    def test_restarted_server_is_reconnected_and_served(self, nats_server, serve, subject, nats_client, caplog):
        """After the server restarts on the same port the transport resubscribes and answers again."""
        caplog.set_level(logging.INFO, logger="resonate_sync.transport")
        transport = serve(nats_server.url)
        nats_server.restart()
        wait_until(lambda: transport.stats["reconnects"] == 1, timeout=5, what="reconnect")
        assert nats_client(nats_server.url).request(subject, b"back").data == b"back"
        [lost] = [r for r in caplog.records if r.getMessage().startswith("lost connection")]
        assert lost.levelno == logging.WARNING, lost
        assert lost.getMessage() == (
            f"lost connection to {nats_server.url}: server closed the connection;"
            f" {subject} is not served until it is back (reconnecting)"
        )
        assert f"reconnected to {nats_server.url} after" in caplog.text

    def test_an_outage_is_warned_about_until_it_ends(self, nats_server, serve, subject, caplog):
        """While NATS is away the transport warns at the loss and again every disconnected_warning_every seconds,
        naming the last error; once back it logs how long the outage lasted."""
        caplog.set_level(logging.INFO, logger="resonate_sync.transport")
        serve(nats_server.url, reconnect_backoff=(0.01, 0.02), disconnected_warning_every=0.1)
        nats_server.stop()

        def still_disconnected():
            return [r for r in caplog.records if r.getMessage().startswith("still disconnected")]

        wait_until(lambda: len(still_disconnected()) >= 3, timeout=5, what="three warnings during the outage")
        nats_server.start()
        wait_until(lambda: "reconnected to" in caplog.text, timeout=5, what="the reconnect")

        messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "resonate_sync.transport"]
        lost = next(i for i, (_, m) in enumerate(messages) if m.startswith("lost connection"))
        back = next(i for i, (_, m) in enumerate(messages) if m.startswith("reconnected"))
        during = [entry for entry in messages[lost + 1:back] if entry[0] >= logging.INFO]
        assert messages[lost][0] == logging.WARNING and len(during) >= 3, messages
        for level, message in during:
            assert level == logging.WARNING and message.startswith(f"still disconnected from {nats_server.url} after "), message
            assert "Connection refused" in message and message.endswith(f"{subject} is not served"), message
        assert messages[back][0] == logging.INFO
        assert re.fullmatch(rf"reconnected to {re.escape(nats_server.url)} after \d+\.\d s; serving {subject} again", messages[back][1])

    def test_silent_server_is_detected_by_ping_timeout(self, nats_server, serve, subject, nats_client, caplog):
        """A server that stops answering (SIGSTOP) is declared lost after unanswered PINGs, then rejoined."""
        caplog.set_level(logging.INFO, logger="resonate_sync.transport")
        transport = serve(nats_server.url, ping_interval=0.2, max_outstanding_pings=2, connect_timeout=0.5)
        nats_server.pause()
        try:
            wait_until(lambda: not transport.connected, timeout=3, what="ping timeout")
        finally:
            nats_server.resume()
        # the supervisor thread logs the loss a moment after `connected` turns False
        wait_until(lambda: "no PONG" in caplog.text, timeout=5, what="the ping-timeout log line")
        wait_until(lambda: transport.connected, timeout=5, what="reconnect after SIGCONT")
        assert nats_client(nats_server.url).request(subject, b"awake").data == b"awake"


class TestBackpressure:
    def test_requests_beyond_max_pending_get_busy_reply(self, shared_nats_server, serve, subject, nats_client):
        """With the backlog full, extra requests are answered busy_reply at once instead of queued."""
        gate = threading.Event()
        transport = serve(shared_nats_server.url, handler=lambda request: gate.wait(5) and request.respond(request.data), workers=1, max_pending=2)
        client = nats_client(shared_nats_server.url)
        pending = client.start_requests(subject, [b"%d" % i for i in range(5)])
        wait_until(lambda: transport.stats["busy_rejections"] == 3, what="3 busy rejections")
        gate.set()
        replies = pending.result(10)
        served = [r for r in replies if r != BUSY]
        assert replies.count(BUSY) == 3
        assert len(set(served)) == 2 and set(served) <= {b"%d" % i for i in range(5)}


ENCODED = {"application/x-test": lambda code, message: b"x-test %d %s" % (code, message.encode())}


class TestContentTypes:
    def test_a_known_content_type_reaches_the_handler_and_comes_back(self, shared_nats_server, serve, subject, nats_client):
        """A request whose Content-Type is one of content_types (any case, parameters ignored) has it as its
        content_type, and its answer carries the header; others have "" and get no header."""
        serve(shared_nats_server.url, handler=lambda request: request.respond(request.content_type.encode()), content_types=ENCODED)
        client = nats_client(shared_nats_server.url)
        for headers, expected in [
            ({"Content-Type": "application/x-test"}, "application/x-test"),
            ({"content-type": "Application/X-Test; charset=utf-8"}, "application/x-test"),
            ({"Content-Type": "application/json"}, ""),
            ({"Other": "x"}, ""),
            (None, ""),
        ]:
            reply = client.request(subject, b"?", headers=headers)
            assert reply.data == expected.encode(), headers
            assert (reply.headers or {}).get("Content-Type") == (expected or None), headers

    def test_the_transports_own_error_replies_come_in_kind(self, shared_nats_server, serve, subject, nats_client):
        """Busy and failure replies to a request with a known Content-Type are content_types' encoding of
        them, with the header; to a request without one, the ErrorReply data as given."""
        gate, blocked = threading.Event(), threading.Event()

        def handler(request: Request) -> None:
            if request.data == b"fail":
                raise RuntimeError("boom")
            blocked.set()
            gate.wait(5)
            request.respond(b"done")

        transport = serve(
            shared_nats_server.url, handler=handler, workers=1, max_pending=1, content_types=ENCODED,
            failure_reply=(500, "failed", b"plain failure"),
        )  # fmt: skip
        client = nats_client(shared_nats_server.url)
        kind = {"Content-Type": "application/x-test"}
        assert client.request(subject, b"fail", headers=kind).data == b"x-test 500 failed"
        assert client.request(subject, b"fail").data == b"plain failure"
        blocking = client.start_requests(subject, [b"block"])
        # The worker holds "block": a stats check alone could still see the last "fail" in flight.
        assert blocked.wait(5)
        wait_until(lambda: transport.stats["in_flight"] == 1, what="the backlog to fill")
        busy = client.request(subject, b"more", headers=kind)
        assert busy.data == b"x-test 503 busy" and busy.headers == kind
        assert client.request(subject, b"more").data == BUSY
        gate.set()
        assert blocking.result(5) == [b"done"]


class TestStop:
    def test_stop_lets_in_flight_request_finish_and_reply(self, shared_nats_server, serve, subject, nats_client):
        """stop(timeout) stops taking requests but the one being handled finishes and its reply is delivered."""
        started = threading.Event()

        def slow(request: Request) -> None:
            started.set()
            time.sleep(0.3)
            request.respond(b"done:" + request.data)

        transport = serve(shared_nats_server.url, handler=slow)
        client = nats_client(shared_nats_server.url)
        pending = client.start_requests(subject, [b"x"])
        assert started.wait(5)
        assert transport.stop(timeout=5) is True
        assert pending.result(5) == [b"done:x"]
        with pytest.raises(nats.errors.NoRespondersError):
            client.request(subject, b"after stop", timeout=1)

    def test_requests_still_queued_at_the_deadline_get_the_stop_reply(self, shared_nats_server, serve, subject, nats_client):
        """When stop()'s timeout ends, queued requests are answered stop_reply without running the handler; none is left silent."""
        release, handled, running = threading.Event(), [], threading.Event()

        def stuck_first(request: Request) -> None:
            handled.append(request.data)
            running.set()
            release.wait(10)
            request.respond(b"served:" + request.data)

        transport = serve(shared_nats_server.url, handler=stuck_first, workers=1, stop_reply=(503, "stopping", b"stopping"))
        client = nats_client(shared_nats_server.url)
        pending = client.start_requests(subject, [b"%d" % i for i in range(20)], timeout=1)
        assert running.wait(5)
        wait_until(lambda: transport.stats["in_flight"] == 20, what="all 20 requests to be taken")
        assert transport.stop(timeout=0.2) is False, "the stuck handler cannot finish in time"
        release.set()
        replies = pending.result(10)
        assert len(handled) == 1, "queued requests must not reach the handler after the deadline"
        assert replies.count(b"stopping") == 19, replies
        abandoned = [r for r in replies if r != b"stopping"]
        assert len(abandoned) == 1 and isinstance(abandoned[0], nats.errors.TimeoutError), abandoned

    def test_stop_is_idempotent_and_leaks_no_threads(self, shared_nats_server, subject, nats_client):
        """After stop() every thread the transport started has ended; a second stop() is a no-op."""
        client = nats_client(shared_nats_server.url)
        before = set(threading.enumerate())
        transport = NatsTransport(shared_nats_server.url, subject, echo, busy_reply=BUSY_REPLY).start()
        client.request_many(subject, [b"%d" % i for i in range(50)])
        assert transport.stop(timeout=2) is True
        assert transport.stop(timeout=2) is True
        wait_until(lambda: set(threading.enumerate()) <= before, timeout=2, what="threads to end")
