"""The NATS protocol without a socket: frames encoded byte for byte, and bytes parsed into messages."""

from __future__ import annotations

import json
from typing import List

import pytest

from resonate_sync.transport.protocol import (
    Err,
    HMsg,
    Info,
    Message,
    Msg,
    Ok,
    ParseError,
    Parser,
    Ping,
    Pong,
    decode_headers,
    encode_connect,
    encode_headers,
    encode_hpub,
    encode_ping,
    encode_pong,
    encode_pub,
    encode_sub,
    encode_unsub,
)

INFO_LINE = b'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n'

# One of every message the server sends, with the awkward cases: a payload holding CRLF and a
# whole frame's text, a zero-length payload, headers with a status line, headers and no payload.
STREAM = (
    INFO_LINE
    + b"MSG s.a 1 3\r\nabc\r\n"
    + b"MSG s.b 2 _INBOX.x.1 22\r\nline\r\nMSG s 1 3\r\nxyz\r\n\r\n"
    + b"MSG s.c 1 0\r\n\r\n"
    + b"HMSG s.d 3 r.1 30 33\r\nNATS/1.0 503 No Responders\r\n\r\nhey\r\n"
    + b"HMSG s.e 3 24 24\r\nNATS/1.0\r\nK: v\r\nK: w\r\n\r\n\r\n"
    + b"PING\r\nPONG\r\n+OK\r\n-ERR 'Permissions Violation'\r\n"
)


def describe(message: Message) -> tuple:
    """A message as comparable data: its type and fields."""
    if isinstance(message, Msg):
        return (type(message).__name__, message.subject, message.reply, message.payload, message.headers, message.sid)
    if isinstance(message, Info):
        return ("Info", message.info)
    if isinstance(message, Err):
        return ("Err", message.message)
    return (type(message).__name__,)


EXPECTED = [
    ("Info", {"server_id": "x", "max_payload": 1048576, "headers": True}),
    ("Msg", "s.a", "", b"abc", None, 1),
    ("Msg", "s.b", "_INBOX.x.1", b"line\r\nMSG s 1 3\r\nxyz\r\n", None, 2),
    ("Msg", "s.c", "", b"", None, 1),
    ("HMsg", "s.d", "r.1", b"hey", {"Status": "503", "Description": "No Responders"}, 3),
    ("HMsg", "s.e", "", b"", {"K": "v, w"}, 3),
    ("Ping",),
    ("Pong",),
    ("Ok",),
    ("Err", "Permissions Violation"),
]


def parse_chunks(*chunks: bytes) -> List[tuple]:
    """Feed ``chunks`` one after the other, taking every message after each."""
    parser, got = Parser(), []
    for chunk in chunks:
        parser.feed(chunk)
        while (message := parser.next()) is not None:
            got.append(describe(message))
    return got


class TestParser:
    def test_every_kind_of_message(self):
        """One chunk holding every kind of message parses into the typed messages, in order."""
        assert parse_chunks(STREAM) == EXPECTED

    def test_split_at_every_byte_offset(self):
        """However the stream is cut in two, the same messages come out."""
        for cut in range(len(STREAM) + 1):
            assert parse_chunks(STREAM[:cut], STREAM[cut:]) == EXPECTED, f"cut at {cut}"

    def test_one_byte_at_a_time(self):
        """A stream arriving one byte per chunk parses the same as in one piece."""
        assert parse_chunks(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED

    def test_nothing_until_the_payload_is_whole(self):
        """A control line without its whole payload yields nothing; missing says how much is to come."""
        parser = Parser()
        parser.feed(b"MSG s 1 10\r\n0123")
        assert parser.next() is None
        assert parser.missing == 8  # 16 of the frame's 24 bytes are here
        parser.feed(b"456789")
        assert parser.next() is None and parser.missing == 2
        parser.feed(b"\r\n")
        assert describe(parser.next()) == ("Msg", "s", "", b"0123456789", None, 1)
        assert parser.next() is None and parser.missing == 0

    def test_large_payload_reports_what_is_missing(self):
        """For a large payload missing tracks the bytes still to come, so the reader can ask for them at once."""
        payload = bytes(range(256)) * 4096
        frame = b"MSG big 7 %d\r\n%s\r\n" % (len(payload), payload)
        parser = Parser()
        parser.feed(frame[:1000])
        assert parser.next() is None
        assert parser.missing == len(frame) - 1000
        parser.feed(frame[1000:])
        message = parser.next()
        assert isinstance(message, Msg) and message.payload == payload

    def test_stopping_early_keeps_the_rest(self):
        """Messages not taken before the next feed are still there, in order, after it."""
        parser = Parser()
        parser.feed(b"PING\r\nMSG s 1 2\r\nhi\r\nMSG s 1 ")
        assert isinstance(parser.next(), Ping)  # stop here, as the handshake does after its PONG
        parser.feed(b"2\r\nho\r\n")
        got = []
        while (message := parser.next()) is not None:
            got.append(message.payload)  # type: ignore[union-attr]
        assert got == [b"hi", b"ho"]

    def test_payloads_are_bytes(self):
        """Payloads are immutable bytes whatever buffering they went through."""
        parser = Parser()
        parser.feed(b"MSG s 1 3\r\na")
        parser.next()
        parser.feed(b"bc\r\n")
        assert type(parser.next().payload) is bytes  # type: ignore[union-attr]

    def test_a_message_with_headers_is_a_msg(self):
        """HMSG parses into an HMsg, which is a Msg: a subscription callback need not tell them apart."""
        parser = Parser()
        parser.feed(b"HMSG s 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
        message = parser.next()
        assert type(message) is HMsg and isinstance(message, Msg) and message.payload == b"hi"

    def test_singletons_are_typed(self):
        """PING, PONG and +OK parse into their own types."""
        parser = Parser()
        parser.feed(b"PING\r\nPONG\r\n+OK\r\n")
        assert [type(parser.next()) for _ in range(3)] == [Ping, Pong, Ok]

    def test_messages_before_an_error_are_delivered(self):
        """What parsed cleanly before corrupt bytes is returned before the error is raised."""
        parser = Parser()
        parser.feed(b"MSG s 1 2\r\nok\r\nMSG s 1 2\r\nabc\r\n")
        assert parser.next().payload == b"ok"  # type: ignore[union-attr]
        with pytest.raises(ParseError, match="payload of 2 bytes not followed by CRLF"):
            parser.next()

    @pytest.mark.parametrize(
        "stream, error",
        [
            (b"HTTP/1.1 400 Bad Request\r\n", "unexpected b'HTTP/1.1 400 Bad Request'"),
            (b"MSG s 1 2\r\nabc\r\n", "not followed by CRLF"),
            (b"MSG s x 2\r\nab\r\n", "malformed"),
            (b"MSG s 1\r\n", "malformed"),
            (b"MSG a b c d e f\r\n", "malformed"),
            (b"MSG s 1 -1\r\n", "malformed"),
            (b"HMSG s 1 9 5\r\nNATS/1.0\r\n\r\n", "malformed"),
            (b"INFO {not json\r\n", "unreadable INFO"),
            (b"INFO [1]\r\n", "unreadable INFO"),
        ],
    )
    def test_corrupt_streams_raise(self, stream, error):
        """Bytes that are not the protocol raise ParseError naming what was wrong."""
        parser = Parser()
        parser.feed(stream)
        with pytest.raises(ParseError, match=error):
            parser.next()


class TestHeaders:
    def test_round_trip(self):
        """Headers encoded for HPUB decode to the same mapping."""
        headers = {"Nats-Expected-Last-Sequence": "41", "X-Trace": "a b c"}
        assert decode_headers(encode_headers(headers)) == headers

    def test_status_line(self):
        """A status line becomes Status and Description; a bare version line adds neither."""
        assert decode_headers(b"NATS/1.0 408 Request Timeout\r\n\r\n") == {"Status": "408", "Description": "Request Timeout"}
        assert decode_headers(b"NATS/1.0\r\nA: 1\r\n\r\n") == {"A": "1"}

    @pytest.mark.parametrize("key, value", [("", "v"), ("a:b", "v"), ("a b", "v"), ("k", "x\r\ny"), ("k", "x\ny")])
    def test_bad_headers_are_refused(self, key, value):
        """A header that would break the header block is a ValueError, never written."""
        with pytest.raises(ValueError, match="invalid header"):
            encode_headers({key: value})

    def test_repeated_blocks_decode_to_fresh_dicts(self):
        """A header block seen before decodes the same, into a dict of its own (changing one changes no other)."""
        block = encode_headers({"Content-Type": "application/msgpack"})
        first = decode_headers(block)
        first["Content-Type"] = "changed"
        assert decode_headers(block) == {"Content-Type": "application/msgpack"}

    def test_many_distinct_blocks_each_decode_and_encode_right(self):
        """More distinct blocks than the cache holds (a trace id per request) each round-trip, the bad still refused."""
        for n in range(300):
            headers = {"Traceparent": f"00-{n:032x}-01", "Content-Type": "application/msgpack"}
            assert decode_headers(encode_headers(headers)) == headers
        for _ in range(2):
            with pytest.raises(ValueError, match="invalid header"):
                encode_headers({"k": "x\ny"})


class TestEncoders:
    def test_pub(self):
        """PUB carries the subject, the reply subject if any, the size, and the payload as given."""
        assert encode_pub("a.b", b"hi") == b"PUB a.b 2\r\nhi\r\n"
        assert encode_pub("a.b", b"x\r\ny", reply="_INBOX.1") == b"PUB a.b _INBOX.1 4\r\nx\r\ny\r\n"
        assert encode_pub("a", b"") == b"PUB a 0\r\n\r\n"

    def test_hpub_sizes(self):
        """HPUB declares the header block's size and the total of headers and payload."""
        head = encode_headers({"K": "v"})
        frame = encode_hpub("s", head, b"body", reply="r")
        assert frame == b"HPUB s r %d %d\r\n%sbody\r\n" % (len(head), len(head) + 4, head)

    def test_sub_and_unsub(self):
        """SUB names the queue group when there is one; UNSUB may carry a message count."""
        assert encode_sub("s.>", 3) == b"SUB s.> 3\r\n"
        assert encode_sub("s", 4, queue="workers") == b"SUB s workers 4\r\n"
        assert encode_unsub(3) == b"UNSUB 3\r\n"
        assert encode_unsub(3, 10) == b"UNSUB 3 10\r\n"

    def test_connect(self):
        """CONNECT is one line of JSON."""
        frame = encode_connect({"protocol": 1, "headers": True, "name": "x y"})
        assert frame.startswith(b"CONNECT ") and frame.endswith(b"\r\n") and frame.count(b"\r\n") == 1
        assert json.loads(frame[len(b"CONNECT ") :]) == {"protocol": 1, "headers": True, "name": "x y"}

    def test_ping_and_pong(self):
        """PING and PONG are bare control lines."""
        assert (encode_ping(), encode_pong()) == (b"PING\r\n", b"PONG\r\n")

    @pytest.mark.parametrize("subject", ["", "a b", "a\r\nPUB x 1", "a\tb"])
    def test_bad_subjects_are_refused(self, subject):
        """A subject, reply subject or queue group with whitespace would split the frame: ValueError."""
        with pytest.raises(ValueError, match="invalid NATS subject"):
            encode_pub(subject, b"x")
        with pytest.raises(ValueError, match="invalid NATS reply subject"):
            encode_pub("ok", b"x", reply=subject or " ")
        with pytest.raises(ValueError, match="invalid NATS queue group"):
            encode_sub("ok", 1, queue=subject or " ")

    def test_what_is_encoded_parses_back(self):
        """A PUB turned into the MSG the server would deliver parses back to the same payload."""
        payload = b"\x00\xff\r\nPING\r\n"
        frame = encode_pub("s", payload, reply="r")
        delivered = frame.replace(b"PUB s r", b"MSG s 9 r", 1)
        parser = Parser()
        parser.feed(delivered)
        assert describe(parser.next()) == ("Msg", "s", "r", payload, None, 9)
