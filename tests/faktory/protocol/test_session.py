"""ServerSession: the server side of the handshake and the command framing (reference sections 3.1 and 4)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_faktory.protocol import commands
from celery_faktory.protocol.handshake import hello_payload, parse_greeting, password_hash
from celery_faktory.protocol.replies import NEED_DATA, Error, ReplyParser, Simple
from celery_faktory.protocol.session import Close, Command, Hello, ServerSession, SessionState

PASSWORD = "s3cr3t-pässword"
SALT = "b119996f5a5e72a"
ITERATIONS = 5965
PWDHASH = "6846f77a609e4bb120914fa152ee5bf4ac09ba1f44b12923d9a168f761fe04e5"
INVALID_PASSWORD = Close(b"-ERR Invalid password\r\n")


def events(session: ServerSession) -> list[Any]:
    out: list[Any] = []
    while (event := session.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, Close):
            break
    return out


def send(session: ServerSession, data: bytes) -> list[Any]:
    session.receive_data(data)
    return events(session)


def hello_line(payload: dict[str, Any], end: bytes = b"\r\n") -> bytes:
    return b"HELLO " + json.dumps(payload, separators=(",", ":")).encode() + end


def ready(**kwargs: Any) -> ServerSession:
    session = ServerSession(**kwargs)
    assert send(session, b'HELLO {"v":2,"hostname":"h"}\r\n') == [Hello({"v": 2, "hostname": "h"})]
    return session


def secured() -> ServerSession:
    return ServerSession(password=PASSWORD, iterations=ITERATIONS, salt=SALT)


# --------------------------------------------------------------------------------------------------------------
# Greeting
# --------------------------------------------------------------------------------------------------------------


def test_greeting_without_password() -> None:
    assert ServerSession().greeting() == b'+HI {"v":2}\r\n'
    # iterations and salt alone do not ask for a password
    assert ServerSession(iterations=5, salt="abc").greeting() == b'+HI {"v":2}\r\n'


def test_greeting_with_password() -> None:
    assert secured().greeting() == b'+HI {"v":2,"i":5965,"s":"b119996f5a5e72a"}\r\n'


def test_initial_state() -> None:
    session = ServerSession()
    assert session.state is SessionState.AWAIT_HELLO
    assert session.next_event() is NEED_DATA


# --------------------------------------------------------------------------------------------------------------
# HELLO
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_hello_accepted(end: bytes) -> None:
    session = ServerSession()
    payload = {"v": 2, "hostname": "box", "wid": "w1", "pid": 12, "labels": ["a"], "rss_kb": 5, "username": "u"}
    [event] = send(session, hello_line(payload, end))
    assert event == Hello(payload)
    assert event.wid == "w1"
    assert session.state is SessionState.READY


@pytest.mark.parametrize(
    "line",
    [
        b"HELLO {}\r\n",
        b'HELLO {"v":1}\r\n',
        b'HELLO {"v":0}\r\n',
        b'HELLO {"v":2,"pwdhash":"meaningless"}\r\n',
        b'HELLO {"v":2,"pid":null,"labels":null,"wid":null}\r\n',
        b'HELLO {"v":2,"unknown":[1,{"x":2}]}\r\n',
        b'HELLO {"v":2,"labels":[]}\r\n',
        b'HELLO { "v" : 2 }\r\n',
    ],
)
def test_hello_variants_accepted_without_password(line: bytes) -> None:
    session = ServerSession()
    [event] = send(session, line)
    assert isinstance(event, Hello)
    assert event.payload == json.loads(line[6:])
    assert session.state is SessionState.READY


def test_hello_wid_empty_for_producer() -> None:
    [event] = send(ServerSession(), b'HELLO {"v":2}\r\n')
    assert event.wid == ""


def test_hello_split_over_many_chunks() -> None:
    session = ServerSession()
    line = b'HELLO {"v":2,"hostname":"h\xc3\xb4te"}\r\n'
    for byte in line[:-1]:
        session.receive_data(bytes([byte]))
        assert session.next_event() is NEED_DATA
    session.receive_data(line[-1:])
    assert session.next_event() == Hello({"v": 2, "hostname": "hôte"})


@pytest.mark.parametrize(
    "line",
    [
        b"PUSH {}\r\n",
        b'HELLO{"v":2}\r\n',
        b'hello {"v":2}\r\n',
        b'HELLO  {"v":2}\r\n',
        b' HELLO {"v":2}\r\n',
        b"HELLO\r\n",
        b"HELLO \r\n",
        b"\r\n",
        b"\n",
        b"INFO\r\n",
        b'HELLO ["v",2]\r\n',
    ],
)
def test_first_line_not_hello_closes_silently(line: bytes) -> None:
    session = ServerSession()
    assert send(session, line) == [Close(b"")]
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize(
    "line",
    [
        b"HELLO {\r\n",
        b"HELLO {]\r\n",
        b'HELLO {"v":2\r\n',
        b"HELLO {v:2}\r\n",
        b'HELLO {"v":2} {}\r\n',
        b'HELLO {"v":2}x\r\n',
        b"HELLO {'v':2}\r\n",
    ],
)
def test_hello_not_json_closes_silently(line: bytes) -> None:
    session = ServerSession()
    assert send(session, line) == [Close(b"")]
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 2, "pid": "12"},
        {"v": 2, "pid": 1.5},
        {"v": 2, "pid": True},
        {"v": 2, "labels": [1]},
        {"v": 2, "labels": ["a", None]},
        {"v": 2, "labels": "a"},
        {"v": 2, "labels": {"a": 1}},
        {"v": 256},
        {"v": -1},
        {"v": 2.0},
        {"v": True},
        {"v": "2"},
        {"v": 2, "hostname": 5},
        {"v": 2, "hostname": ["h"]},
        {"v": 2, "wid": 5},
        {"v": 2, "wid": False},
        {"v": 2, "pwdhash": 5},
        {"v": 2, "username": {}},
        {"v": 2, "rss_kb": "5"},
        {"v": 2, "rss_kb": 5.5},
    ],
)
def test_hello_wrong_field_types_close_silently(payload: dict[str, Any]) -> None:
    session = ServerSession()
    assert send(session, hello_line(payload)) == [Close(b"")]
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize("version", [3, 4, 255])
def test_hello_newer_version_within_a_byte_is_accepted(version: int) -> None:
    # A real Faktory 1.9.4 answers HELLO {"v":3} with +OK: only values outside 0..255 fail to decode.
    session = ServerSession()
    assert send(session, hello_line({"v": version})) == [Hello({"v": version})]


def test_second_hello_is_just_a_command() -> None:
    session = ready()
    assert send(session, b'HELLO {"v":2}\r\n') == [Command("HELLO", '{"v":2}')]
    assert session.state is SessionState.READY


# --------------------------------------------------------------------------------------------------------------
# Password
# --------------------------------------------------------------------------------------------------------------


def test_password_correct_v2_hash() -> None:
    session = secured()
    [event] = send(session, hello_line({"v": 2, "hostname": "h", "pwdhash": PWDHASH}))
    assert event == Hello({"v": 2, "hostname": "h", "pwdhash": PWDHASH})
    assert session.state is SessionState.READY


@pytest.mark.parametrize(
    "pwdhash",
    [
        PWDHASH.upper(),
        PWDHASH[:-1] + "4",
        PWDHASH[:-1],
        PWDHASH + "0",
        "",
        password_hash(PASSWORD, SALT, ITERATIONS - 1),
        password_hash(PASSWORD, SALT, ITERATIONS + 1),
        password_hash(PASSWORD, SALT, 1),
        password_hash("wrong", SALT, ITERATIONS),
        "é" * 64,
    ],
)
def test_password_wrong_hash(pwdhash: str) -> None:
    session = secured()
    assert send(session, hello_line({"v": 2, "pwdhash": pwdhash})) == [INVALID_PASSWORD]
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize("payload", [{"v": 2}, {"v": 2, "pwdhash": None}, {}])
def test_password_missing(payload: dict[str, Any]) -> None:
    session = secured()
    assert send(session, hello_line(payload)) == [INVALID_PASSWORD]
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize(
    ("salt", "iterations", "version", "pwdhash"),
    [
        ("28b2c3fdcd75073", 6550, 1, "10a0e990e9f0314f3a8e92385096749d70b209a8d8fad00cfffb120e593f0788"),
        ("28e41eb715c6b76c", 4587, None, "bb77924352584965071d6c5028c91638c0a0024a243b1a1cc7b89cbb8b74d2cd"),
        ("28e41eb715c6b76c", 4587, 0, "bb77924352584965071d6c5028c91638c0a0024a243b1a1cc7b89cbb8b74d2cd"),
    ],
)
def test_password_single_application_below_v2(salt: str, iterations: int, version: int | None, pwdhash: str) -> None:
    session = ServerSession(password=PASSWORD, iterations=iterations, salt=salt)
    payload: dict[str, Any] = {"pwdhash": pwdhash}
    if version is not None:
        payload["v"] = version
    assert send(session, hello_line(payload)) == [Hello(payload)]


@pytest.mark.parametrize(
    ("salt", "iterations", "version", "pwdhash"),
    [
        # Real negative vectors (reference 4.4): uppercase, i - 1 applications, full applications with v 1.
        ("c69e23d7ac62feb", 8074, 2, "7D10CADF164858843B1A86F0DA0EA48BFE56E3D0E946C248244598D2A6D64655"),
        ("54d10c02949dff26", 6154, 2, "2e7da06c5abc3fbbf459963390a9649f491853683a703a40004b4ce7453ecd1c"),
        ("2a24340cf4c2bcb9", 6227, 1, "41c437b3911ffd1f6dceb275fb4a2a27273742e72567fc56a1990c5b63bef752"),
    ],
)
def test_password_real_negative_vectors(salt: str, iterations: int, version: int, pwdhash: str) -> None:
    session = ServerSession(password=PASSWORD, iterations=iterations, salt=salt)
    assert send(session, hello_line({"v": version, "pwdhash": pwdhash})) == [INVALID_PASSWORD]


def test_v2_client_with_single_application_refused() -> None:
    session = secured()
    assert send(session, hello_line({"v": 2, "pwdhash": password_hash(PASSWORD, SALT, 1)})) == [INVALID_PASSWORD]


def test_client_helpers_authenticate_against_the_session() -> None:
    session = secured()
    greeting = parse_greeting(session.greeting()[1:-2].decode())
    line = commands.hello(hello_payload(greeting, hostname="box", password=PASSWORD, wid="w1", pid=3))
    [event] = send(session, line)
    assert isinstance(event, Hello)
    assert event.payload["pwdhash"] == PWDHASH
    assert event.wid == "w1"


def test_password_reply_parses_as_the_server_error() -> None:
    parser = ReplyParser()
    parser.feed(INVALID_PASSWORD.reply)
    assert parser.next_reply() == Error("ERR", "Invalid password")


def test_greeting_parses_as_simple_string() -> None:
    parser = ReplyParser()
    parser.feed(secured().greeting())
    reply = parser.next_reply()
    assert isinstance(reply, Simple)
    assert parse_greeting(reply.text).salt == SALT


# --------------------------------------------------------------------------------------------------------------
# Commands after READY
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"INFO\r\n", Command("INFO", None)),
        (b"INFO\n", Command("INFO", None)),
        (b"PUSH \r\n", Command("PUSH", "")),
        (b"PUSH {}\r\n", Command("PUSH", "{}")),
        (b'PUSH {"a": "b c"}\r\n', Command("PUSH", '{"a": "b c"}')),
        (b"QUEUE PAUSE a b\r\n", Command("QUEUE", "PAUSE a b")),
        (b"FETCH  a\r\n", Command("FETCH", " a")),
        (b"FLUSH x\n", Command("FLUSH", "x")),
        (b"push {}\r\n", Command("push", "{}")),
        (b"\r\n", Command("", None)),
        (b"\n", Command("", None)),
        (b" \r\n", Command("", "")),
        (b'ACK {"jid":"\xc3\xa4"}\r\n', Command("ACK", '{"jid":"ä"}')),
        (b"END\r\n", Command("END", None)),
    ],
)
def test_command_lines(line: bytes, command: Command) -> None:
    session = ready()
    assert send(session, line) == [command]
    assert session.state is SessionState.READY


def test_hello_and_commands_in_one_chunk() -> None:
    session = ServerSession()
    got = send(session, b'HELLO {"v":2}\r\nPUSH {}\r\nFETCH q\nINFO\r\nEND\r\nFLU')
    assert got == [
        Hello({"v": 2}),
        Command("PUSH", "{}"),
        Command("FETCH", "q"),
        Command("INFO", None),
        Command("END", None),
    ]
    assert send(session, b"SH\r\n") == [Command("FLUSH", None)]


def test_one_command_over_many_chunks() -> None:
    session = ready()
    line = b'PUSH {"jid":"abcdefgh","jobtype":"x","args":["\xe2\x82\xac"]}\r\n'
    for byte in line[:-1]:
        session.receive_data(bytes([byte]))
        assert session.next_event() is NEED_DATA
    session.receive_data(line[-1:])
    assert session.next_event() == Command("PUSH", '{"jid":"abcdefgh","jobtype":"x","args":["€"]}')
    assert session.next_event() is NEED_DATA


def test_crlf_split_between_chunks() -> None:
    session = ready()
    assert send(session, b"INFO\r") == []
    assert send(session, b"\nEND\r\n") == [Command("INFO", None), Command("END", None)]


@given(
    lines=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30), max_size=10),
    data=st.data(),
)
@settings(max_examples=100)
def test_random_chunking_of_commands(lines: list[str], data: st.DataObject) -> None:
    stream = b"".join(line.encode() + b"\r\n" for line in lines)
    points = sorted(set(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10))))
    cuts = [0, *points, len(stream)]
    session = ready()
    got: list[Any] = []
    for a, b in itertools.pairwise(cuts):
        got.extend(send(session, stream[a:b]))
    expected = []
    for line in lines:
        verb, space, rest = line.partition(" ")
        expected.append(Command(verb, rest if space else None))
    assert got == expected


# --------------------------------------------------------------------------------------------------------------
# Line length and closing
# --------------------------------------------------------------------------------------------------------------


def assert_error_close(event: Any) -> None:
    assert isinstance(event, Close)
    assert event.reply.startswith(b"-ERR ")
    assert event.reply.endswith(b"\r\n")
    assert event.reply.count(b"\n") == 1


def test_unterminated_line_over_max_line_closes_with_error() -> None:
    session = ready(max_line=64)
    [event] = send(session, b"PUSH " + b"x" * 100)
    assert_error_close(event)
    assert session.state is SessionState.CLOSED
    assert session.next_event() is NEED_DATA


def test_unterminated_line_over_max_line_in_small_chunks() -> None:
    session = ready(max_line=64)
    got: list[Any] = []
    for _ in range(30):
        got.extend(send(session, b"xxxxx"))
    [event] = got
    assert_error_close(event)


def test_unterminated_hello_over_max_line_closes_with_error() -> None:
    session = ServerSession(max_line=64)
    [event] = send(session, b'HELLO {"hostname":"' + b"h" * 100)
    assert_error_close(event)


def test_complete_line_over_max_line_closes_with_error() -> None:
    # The limit must hold whether or not the line's LF arrived in the same chunk.
    session = ready(max_line=64)
    [event] = send(session, b"PUSH " + b"x" * 100 + b"\r\n")
    assert_error_close(event)
    assert session.state is SessionState.CLOSED


def test_complete_hello_over_max_line_closes_with_error() -> None:
    session = ServerSession(max_line=64)
    [event] = send(session, b'HELLO {"hostname":"' + b"h" * 100 + b'"}\r\n')
    assert_error_close(event)


@pytest.mark.parametrize("chunked", [False, True], ids=["one-piece", "byte-by-byte"])
def test_line_of_exactly_max_line_bytes_is_accepted(chunked: bool) -> None:
    session = ready(max_line=64)
    line = b"PUSH " + b"x" * 59
    assert len(line) == 64
    data = line + b"\r\n"
    got: list[Any] = []
    for chunk in [data[i : i + 1] for i in range(len(data))] if chunked else [data]:
        got.extend(send(session, chunk))
    assert got == [Command("PUSH", "x" * 59)]


def test_line_under_max_line_is_accepted() -> None:
    session = ready(max_line=64)
    assert send(session, b"PUSH " + b"x" * 40 + b"\r\n") == [Command("PUSH", "x" * 40)]


def test_no_events_after_close() -> None:
    session = ServerSession()
    assert send(session, b"PUSH {}\r\nINFO\r\n") == [Close(b"")]
    assert session.next_event() is NEED_DATA
    session.receive_data(b'HELLO {"v":2}\r\nINFO\r\n')
    assert session.next_event() is NEED_DATA
    assert session.state is SessionState.CLOSED


def test_no_events_after_invalid_password() -> None:
    session = secured()
    assert send(session, b'HELLO {"v":2,"pwdhash":"x"}\r\nINFO\r\n') == [INVALID_PASSWORD]
    assert session.next_event() is NEED_DATA
    session.receive_data(hello_line({"v": 2, "pwdhash": PWDHASH}))
    assert session.next_event() is NEED_DATA
