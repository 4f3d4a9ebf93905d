"""ReplyParser and the encode_* helpers: the RESP2 subset a Faktory server answers with (reference section 3.2)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_faktory.errors import (
    EnterpriseOnly,
    JobRejected,
    MalformedReply,
    NotUnique,
    ProtocolError,
    ServerError,
)
from celery_faktory.protocol.replies import (
    MAX_DEPTH,
    NEED_DATA,
    Array,
    Bulk,
    Error,
    Integer,
    Reply,
    ReplyParser,
    Simple,
    encode_bulk,
    encode_error,
    encode_simple,
)

TYPE_BYTES = b"+-$:*"


def drain(parser: ReplyParser) -> list[Reply]:
    """Every complete reply currently buffered."""
    out: list[Reply] = []
    while True:
        reply = parser.next_reply()
        if reply is NEED_DATA:
            return out
        out.append(reply)


def parse_all(data: bytes, **kwargs: int) -> list[Reply]:
    parser = ReplyParser(**kwargs)
    parser.feed(data)
    return drain(parser)


def parse_chunked(chunks: list[bytes], **kwargs: int) -> list[Reply]:
    parser = ReplyParser(**kwargs)
    out: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        out.extend(drain(parser))
    return out


def one(data: bytes) -> Reply:
    replies = parse_all(data)
    assert len(replies) == 1, replies
    return replies[0]


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    cuts = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts)]


# --------------------------------------------------------------------------------------------------------------
# Every reply type
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"+OK\r\n", Simple("OK")),
        (b"+\r\n", Simple("")),
        (b'+HI {"v":2}\r\n', Simple('HI {"v":2}')),
        (b'+{"state":"quiet"}\r\n', Simple('{"state":"quiet"}')),
        (b"+caf\xc3\xa9 \xe2\x82\xac\r\n", Simple("café €")),
        (b"-ERR Invalid password\r\n", Error("ERR", "Invalid password")),
        (b"-NOTUNIQUE Job not unique\r\n", Error("NOTUNIQUE", "Job not unique")),
        (b"-ERR\r\n", Error("ERR", "")),
        (b"-ERR unknown command \r\n", Error("ERR", "unknown command ")),
        (b"-ERR unknown command push\r\n", Error("ERR", "unknown command push")),
        (b"-ERR a  b\r\n", Error("ERR", "a  b")),
        (b"$5\r\nhello\r\n", Bulk("hello")),
        (b"$-1\r\n", Bulk(None)),
        (b"$0\r\n\r\n", Bulk("")),
        (b"$4\r\na\r\nb\r\n", Bulk("a\r\nb")),
        (b"$2\r\n\xc3\xa4\r\n", Bulk("ä")),
        (b":0\r\n", Integer(0)),
        (b":42\r\n", Integer(42)),
        (b":-7\r\n", Integer(-7)),
        (b":9223372036854775807\r\n", Integer(9223372036854775807)),
        (b"*0\r\n", Array(())),
        (b"*-1\r\n", Array(None)),
        (b"*3\r\n+a\r\n$1\r\nb\r\n:3\r\n", Array((Simple("a"), Bulk("b"), Integer(3)))),
        (b"*2\r\n$-1\r\n-ERR x\r\n", Array((Bulk(None), Error("ERR", "x")))),
        (
            b"*2\r\n*2\r\n:1\r\n*-1\r\n*1\r\n*0\r\n",
            Array((Array((Integer(1), Array(None))), Array((Array(()),)))),
        ),
    ],
)
def test_every_reply_type(data: bytes, expected: Reply) -> None:
    assert one(data) == expected


def test_empty_bulk_needs_its_crlf() -> None:
    parser = ReplyParser()
    parser.feed(b"$0\r\n")
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"\r\n")
    assert parser.next_reply() == Bulk("")


def test_nothing_buffered_is_need_data() -> None:
    parser = ReplyParser()
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 0


def test_error_code_and_message_split_at_first_space() -> None:
    reply = one(b"-ERR invalid timestamp for 'at': \"x y\": boom\r\n")
    assert reply == Error("ERR", "invalid timestamp for 'at': \"x y\": boom")


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (Error("NOTUNIQUE", "Job not unique"), NotUnique),
        (Error("ERR", "batch subsystem is only available in Faktory Enterprise"), EnterpriseOnly),
        (Error("ERR", "jobs must have a jobtype parameter"), JobRejected),
        (Error("ERR", "unknown command BOGUS"), ServerError),
    ],
)
def test_error_to_exception(error: Error, cls: type[ServerError]) -> None:
    exc = error.to_exception()
    assert type(exc) is cls
    assert (exc.code, exc.message) == (error.code, error.message)


# --------------------------------------------------------------------------------------------------------------
# Incremental feeding
# --------------------------------------------------------------------------------------------------------------


def test_several_replies_in_one_feed() -> None:
    data = b"+OK\r\n$-1\r\n-ERR unknown command \r\n$3\r\nabc\r\n:5\r\n*1\r\n+x\r\n"
    assert parse_all(data) == [
        Simple("OK"),
        Bulk(None),
        Error("ERR", "unknown command "),
        Bulk("abc"),
        Integer(5),
        Array((Simple("x"),)),
    ]


def test_partial_trailing_reply_stays_buffered() -> None:
    parser = ReplyParser()
    parser.feed(b"+OK\r\n+O")
    assert parser.next_reply() == Simple("OK")
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 2
    parser.feed(b"K\r\n")
    assert parser.next_reply() == Simple("OK")
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"+OK\r\n", Simple("OK")),
        (b"-ERR unknown command \r\n", Error("ERR", "unknown command ")),
        (b'$17\r\n{"state":"quiet"}\r\n', Bulk('{"state":"quiet"}')),
        (b"*3\r\n$1\r\na\r\n*1\r\n:12\r\n$-1\r\n", Array((Bulk("a"), Array((Integer(12),)), Bulk(None)))),
        (b"$5\r\n\xe2\x82\xac\xc3\xa4\r\n", Bulk("€ä")),
    ],
)
def test_reply_split_byte_by_byte(data: bytes, expected: Reply) -> None:
    parser = ReplyParser()
    for byte in data[:-1]:
        parser.feed(bytes([byte]))
        assert parser.next_reply() is NEED_DATA
    parser.feed(data[-1:])
    assert parser.next_reply() == expected
    assert parser.next_reply() is NEED_DATA


@pytest.mark.parametrize("prefix", [b"+", b"$3\r\n", b"-ERR "])
def test_multibyte_utf8_split_across_feeds(prefix: bytes) -> None:
    euro = "€".encode()  # three bytes
    assert len(euro) == 3
    parser = ReplyParser()
    parser.feed(prefix + euro[:1])
    assert parser.next_reply() is NEED_DATA
    parser.feed(euro[1:2])
    assert parser.next_reply() is NEED_DATA
    parser.feed(euro[2:] + b"\r\n")
    reply = parser.next_reply()
    assert reply in (Simple("€"), Bulk("€"), Error("ERR", "€"))


def test_two_megabyte_bulk_in_one_piece_and_in_chunks() -> None:
    body = ("x" * 1000 + "ä€\r\n") * 2100  # over 2 MB of UTF-8, with multi-byte characters and CRLFs
    raw = body.encode()
    assert len(raw) >= 2 * 1024 * 1024
    data = b"$%d\r\n%b\r\n+OK\r\n" % (len(raw), raw)
    assert parse_all(data) == [Bulk(body), Simple("OK")]
    chunks = [data[i : i + 65521] for i in range(0, len(data), 65521)]
    assert parse_chunked(chunks) == [Bulk(body), Simple("OK")]


def test_many_replies_past_the_compaction_threshold() -> None:
    # Consumes well over 64 KiB of replies from one buffer while a partial reply waits behind them.
    parser = ReplyParser()
    parser.feed(b"$1000\r\n" + b"y" * 1000 + b"\r\n")
    parser.feed((b"$1000\r\n" + b"z" * 1000 + b"\r\n") * 200 + b"+par")
    replies = drain(parser)
    assert replies == [Bulk("y" * 1000)] + [Bulk("z" * 1000)] * 200
    assert parser.buffered == 4
    parser.feed(b"tial\r\n")
    assert parser.next_reply() == Simple("partial")
    assert parser.buffered == 0


# --------------------------------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"OK\r\n", id="no-type-byte"),
    pytest.param(b"#1\r\n", id="bad-type-byte"),
    pytest.param(b"\r\n", id="bare-crlf"),
    pytest.param(b"\n", id="bare-lf-as-type"),
    pytest.param(b"+OK\n", id="bare-lf"),
    pytest.param(b"+\n", id="bare-lf-empty"),
    pytest.param(b"$1\nx\r\n", id="bare-lf-in-header"),
    pytest.param(b"+O\rK\r\n", id="cr-inside-simple"),
    pytest.param(b"-ERR a\rb\r\n", id="cr-inside-error"),
    pytest.param(b"+OK\r\r\n", id="double-cr"),
    pytest.param(b"- no code\r\n", id="error-without-code"),
    pytest.param(b"-\r\n", id="empty-error"),
    pytest.param(b"$01\r\nx\r\n", id="length-leading-zero"),
    pytest.param(b"$abc\r\n", id="length-letters"),
    pytest.param(b"$\r\n", id="length-empty"),
    pytest.param(b"$-2\r\n", id="length-minus-two"),
    pytest.param(b"$-0\r\n", id="length-minus-zero"),
    pytest.param(b"$+1\r\nx\r\n", id="length-plus"),
    pytest.param(b"$ 1\r\nx\r\n", id="length-space"),
    pytest.param(b"$1 \r\nx\r\n", id="length-trailing-space"),
    pytest.param(b"$1234567890123456789\r\n", id="length-too-many-digits"),
    pytest.param(b"*01\r\n", id="array-length-leading-zero"),
    pytest.param(b"*x\r\n", id="array-length-letters"),
    pytest.param(b"*-2\r\n", id="array-length-minus-two"),
    pytest.param(b":\r\n", id="integer-empty"),
    pytest.param(b":01\r\n", id="integer-leading-zero"),
    pytest.param(b":1.5\r\n", id="integer-float"),
    pytest.param(b":+1\r\n", id="integer-plus"),
    pytest.param(b":abc\r\n", id="integer-letters"),
    pytest.param(b"$3\r\nabcd\r\n", id="bulk-too-long"),
    pytest.param(b"$3\r\nab\r\n+", id="bulk-too-short"),
    pytest.param(b"$3\r\nabc\nX", id="bulk-lf-only"),
    pytest.param(b"$3\r\nabcXY", id="bulk-no-crlf"),
    pytest.param(b"$3\r\nabc\r\r", id="bulk-cr-cr"),
    pytest.param(b"+\xff\r\n", id="simple-invalid-utf8"),
    pytest.param(b"+\xc3\r\n", id="simple-truncated-utf8"),
    pytest.param(b"-ERR \xff\xfe\r\n", id="error-invalid-utf8"),
    pytest.param(b"$2\r\n\xc3\x28\r\n", id="bulk-invalid-utf8"),
    pytest.param(b"$3\r\n\xed\xa0\x80\r\n", id="bulk-surrogate-utf8"),
    pytest.param(b"*2\r\n+a\r\n!\r\n", id="bad-array-item"),
    pytest.param(b"+OK\r\n!", id="garbage-after-reply"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_raises(data: bytes) -> None:
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(MalformedReply):
        drain(parser)


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_raises_when_fed_byte_by_byte(data: bytes) -> None:
    parser = ReplyParser()
    with pytest.raises(MalformedReply):  # noqa: PT012 - feeding is part of what is tested
        for byte in data:
            parser.feed(bytes([byte]))
            drain(parser)


@pytest.mark.parametrize("data", MALFORMED)
def test_parser_stays_broken(data: bytes) -> None:
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(MalformedReply) as first:
        drain(parser)
    parser.feed(b"+OK\r\n")
    for _ in range(3):
        with pytest.raises(MalformedReply) as again:
            parser.next_reply()
        assert str(again.value) == str(first.value)


def test_malformed_reply_is_a_protocol_error() -> None:
    parser = ReplyParser()
    parser.feed(b"?\r\n")
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_replies_before_the_malformed_one_are_returned() -> None:
    parser = ReplyParser()
    parser.feed(b"+OK\r\n$1\r\na\r\n+bad\n")
    assert parser.next_reply() == Simple("OK")
    assert parser.next_reply() == Bulk("a")
    with pytest.raises(MalformedReply):
        parser.next_reply()


# Limits ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"+", b"-E"])
def test_unterminated_line_over_max_line(kind: bytes) -> None:
    parser = ReplyParser(max_line=16)
    parser.feed(kind + b"a" * 40)
    with pytest.raises(MalformedReply):
        parser.next_reply()


def test_unterminated_line_over_max_line_fed_in_pieces() -> None:
    parser = ReplyParser(max_line=16)
    with pytest.raises(MalformedReply):  # noqa: PT012
        for _ in range(40):
            parser.feed(b"+aaa" if parser.buffered == 0 else b"aaa")
            assert parser.next_reply() is NEED_DATA


@pytest.mark.parametrize("kind", [b"+", b"-ERR "])
def test_complete_line_over_max_line_in_one_feed(kind: bytes) -> None:
    # The limit must not depend on whether the line's LF arrived in the same read as its start.
    parser = ReplyParser(max_line=16)
    parser.feed(kind + b"1" * 40 + b"\r\n")
    with pytest.raises(MalformedReply):
        parser.next_reply()


@pytest.mark.parametrize("chunked", [False, True], ids=["one-piece", "byte-by-byte"])
def test_line_of_exactly_max_line_bytes_is_accepted(chunked: bool) -> None:
    data = b"+" + b"a" * 16 + b"\r\n"
    chunks = [data[i : i + 1] for i in range(len(data))] if chunked else [data]
    assert parse_chunked(chunks, max_line=16) == [Simple("a" * 16)]


def test_bulk_over_max_bulk_is_refused_before_its_body() -> None:
    parser = ReplyParser(max_bulk=10)
    parser.feed(b"$11\r\n")
    with pytest.raises(MalformedReply):
        parser.next_reply()


def test_bulk_of_exactly_max_bulk() -> None:
    assert parse_all(b"$10\r\n0123456789\r\n", max_bulk=10) == [Bulk("0123456789")]


def test_bulk_body_is_not_limited_by_max_line() -> None:
    assert parse_all(b"$40\r\n" + b"b" * 40 + b"\r\n", max_line=16) == [Bulk("b" * 40)]


def test_nesting_up_to_max_depth_is_accepted() -> None:
    reply = one(b"*1\r\n" * MAX_DEPTH + b":1\r\n")
    depth = 0
    while isinstance(reply, Array):
        assert reply.items is not None
        (reply,) = reply.items
        depth += 1
    assert depth == MAX_DEPTH
    assert reply == Integer(1)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 100_000])
def test_arrays_nested_too_deeply(levels: int) -> None:
    parser = ReplyParser()
    parser.feed(b"*1\r\n" * levels + b":1\r\n")
    with pytest.raises(MalformedReply):
        parser.next_reply()


def test_too_deep_nesting_is_detected_before_the_leaf_arrives() -> None:
    parser = ReplyParser()
    parser.feed(b"*1\r\n" * (MAX_DEPTH + 1))
    with pytest.raises(MalformedReply):
        parser.next_reply()


# --------------------------------------------------------------------------------------------------------------
# encode_* round trips
# --------------------------------------------------------------------------------------------------------------


def test_encoders_exact_bytes() -> None:
    assert encode_simple("OK") == b"+OK\r\n"
    assert encode_error("unknown command BOGUS") == b"-ERR unknown command BOGUS\r\n"
    assert encode_error("Job not unique", code="NOTUNIQUE") == b"-NOTUNIQUE Job not unique\r\n"
    assert encode_error("a\r\nb\nc") == b"-ERR a  b c\r\n"
    assert encode_bulk(None) == b"$-1\r\n"
    assert encode_bulk("") == b"$0\r\n\r\n"
    assert encode_bulk("ä") == b"$2\r\n\xc3\xa4\r\n"


LINE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"))
CODE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters=" \r\n"), min_size=1, max_size=12)


@given(LINE_TEXT)
@settings(max_examples=100)
def test_encode_simple_round_trip(text: str) -> None:
    assert one(encode_simple(text)) == Simple(text)


@given(st.text(), CODE_TEXT)
@settings(max_examples=100)
def test_encode_error_round_trip(message: str, code: str) -> None:
    flat = message.replace("\r", " ").replace("\n", " ")
    assert one(encode_error(message, code=code)) == Error(code, flat)


@given(st.none() | st.text())
@settings(max_examples=100)
def test_encode_bulk_round_trip(value: str | None) -> None:
    assert one(encode_bulk(value)) == Bulk(value)


# --------------------------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------------------------


def encode(reply: Reply) -> bytes:
    """A reference RESP2 encoder, independent of the code under test."""
    if isinstance(reply, Simple):
        return b"+" + reply.text.encode("utf-8") + b"\r\n"
    if isinstance(reply, Error):
        line = reply.code + (" " + reply.message if reply.message else "")
        return b"-" + line.encode("utf-8") + b"\r\n"
    if isinstance(reply, Integer):
        return b":" + str(reply.value).encode() + b"\r\n"
    if isinstance(reply, Bulk):
        if reply.value is None:
            return b"$-1\r\n"
        body = reply.value.encode("utf-8")
        return b"$" + str(len(body)).encode() + b"\r\n" + body + b"\r\n"
    assert isinstance(reply, Array)
    if reply.items is None:
        return b"*-1\r\n"
    return b"*" + str(len(reply.items)).encode() + b"\r\n" + b"".join(encode(item) for item in reply.items)


SCALAR_REPLIES = st.one_of(
    st.builds(Simple, LINE_TEXT),
    st.builds(Error, CODE_TEXT, LINE_TEXT),
    st.builds(Bulk, st.none() | st.text()),
    st.builds(Integer, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    st.just(Array(None)),
)
REPLIES = st.recursive(
    SCALAR_REPLIES,
    lambda children: st.builds(Array, st.lists(children, max_size=4).map(tuple)),
    max_leaves=12,
)


def test_reference_encoder_agrees_with_examples() -> None:
    # Guards the test's own encoder, so the property below checks the parser and not a mirror image of it.
    assert encode(Array((Simple("a"), Bulk(None), Integer(-3), Error("ERR", "x y")))) == (
        b"*4\r\n+a\r\n$-1\r\n:-3\r\n-ERR x y\r\n"
    )
    assert encode(Bulk("ä")) == b"$2\r\n\xc3\xa4\r\n"


@given(replies=st.lists(REPLIES, max_size=8), data=st.data())
@settings(max_examples=150, deadline=None)
def test_random_chunking_yields_the_same_replies(replies: list[Reply], data: st.DataObject) -> None:
    stream = b"".join(encode(reply) for reply in replies)
    points = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12))
    whole = parse_all(stream)
    assert whole == replies
    assert parse_chunked(split_at(stream, points)) == whole


@given(replies=st.lists(REPLIES, max_size=4))
@settings(max_examples=50, deadline=None)
def test_byte_by_byte_yields_the_same_replies(replies: list[Reply]) -> None:
    stream = b"".join(encode(reply) for reply in replies)
    assert parse_chunked([stream[i : i + 1] for i in range(len(stream))]) == replies


GARBAGE_TOKENS = st.sampled_from(
    [b"+", b"-", b"$", b":", b"*", b"\r\n", b"\r", b"\n", b"0", b"1", b"-1", b"9", b"99999999999", b"OK", b" ", b"\xff",
     b"\xc3", b"*1\r\n", b"$3\r\n", b"$-1\r\n", b"*-1\r\n", b"ERR"]
)  # fmt: skip
GARBAGE = st.binary(max_size=300) | st.lists(GARBAGE_TOKENS, max_size=60).map(b"".join)


@given(garbage=GARBAGE, data=st.data())
@settings(max_examples=200, deadline=500)
def test_garbage_never_raises_anything_but_malformed_reply(garbage: bytes, data: st.DataObject) -> None:
    points = data.draw(st.lists(st.integers(min_value=0, max_value=len(garbage)), max_size=10))
    parser = ReplyParser(max_line=1024, max_bulk=4096)
    broken = False
    for chunk in split_at(garbage, points):
        parser.feed(chunk)
        try:  # any exception other than MalformedReply propagates and fails the test
            replies = drain(parser)
        except MalformedReply:
            broken = True
            break
        for reply in replies:
            assert isinstance(reply, (Simple, Error, Bulk, Integer, Array))
    if broken:
        with pytest.raises(MalformedReply):
            parser.next_reply()
    else:
        assert parser.next_reply() is NEED_DATA


NON_TYPE_BYTES = st.integers(min_value=0, max_value=255).filter(lambda b: b not in TYPE_BYTES).map(lambda b: bytes([b]))


@given(replies=st.lists(REPLIES, max_size=5), bad=NON_TYPE_BYTES, data=st.data())
@settings(max_examples=150, deadline=None)
def test_valid_stream_then_garbage(replies: list[Reply], bad: bytes, data: st.DataObject) -> None:
    stream = b"".join(encode(reply) for reply in replies) + bad
    points = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=8))
    parser = ReplyParser()
    got: list[Reply] = []
    with pytest.raises(MalformedReply):  # noqa: PT012
        for chunk in split_at(stream, points):
            parser.feed(chunk)
            while (reply := parser.next_reply()) is not NEED_DATA:
                got.append(reply)
    assert got == replies
