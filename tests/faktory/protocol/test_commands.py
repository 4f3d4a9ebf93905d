"""Client-to-server command encoders (reference sections 3.1, 6 and 11.1)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_faktory.errors import InvalidCommand, ProtocolError
from celery_faktory.protocol import commands
from celery_faktory.protocol.encoding import dumps, dumps_spaceless, loads

JOB = {"jid": "abcdefgh12345678", "jobtype": "add", "args": [1, 2]}

#: Lines that kill a Faktory 1.9.4 server (section 11.1); no encoder may ever produce one.
FORBIDDEN = frozenset(
    {
        b"PUSH\r\n",
        b"PUSHB\r\n",
        b"ACK\r\n",
        b"FAIL\r\n",
        b"BEAT\r\n",
        b"QUEUE\r\n",
        b"QUEUE PAUSE\r\n",
        b"QUEUE RESUME\r\n",
        b"QUEUE REMOVE\r\n",
    }
)


def argument(line: bytes, verb: bytes) -> bytes:
    assert line.startswith(verb + b" ")
    assert line.endswith(b"\r\n")
    return line[len(verb) + 1 : -2]


def json_argument(line: bytes, verb: bytes) -> Any:
    return json.loads(argument(line, verb))


def assert_one_line(line: bytes) -> None:
    assert line.endswith(b"\r\n")
    assert line.count(b"\n") == 1
    assert line.count(b"\r") == 1


# --------------------------------------------------------------------------------------------------------------
# Exact bytes
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (commands.flush(), b"FLUSH\r\n"),
        (commands.info(), b"INFO\r\n"),
        (commands.end(), b"END\r\n"),
        (commands.hello({"v": 2, "hostname": "box"}), b'HELLO {"v":2,"hostname":"box"}\r\n'),
        (commands.hello({}), b"HELLO {}\r\n"),
        (
            commands.hello({"v": 2, "hostname": "h", "wid": "w1", "pid": 7, "labels": ["a"], "pwdhash": "ab"}),
            b'HELLO {"v":2,"hostname":"h","wid":"w1","pid":7,"labels":["a"],"pwdhash":"ab"}\r\n',
        ),
        (commands.push(JOB), b'PUSH {"jid":"abcdefgh12345678","jobtype":"add","args":[1,2]}\r\n'),
        (
            commands.push({**JOB, "queue": "q1", "retry": 3, "custom": {"k": "ä"}, "at": "2026-01-01T00:00:00Z"}),
            b'PUSH {"jid":"abcdefgh12345678","jobtype":"add","args":[1,2],"queue":"q1","retry":3,'
            b'"custom":{"k":"\xc3\xa4"},"at":"2026-01-01T00:00:00Z"}\r\n',
        ),
        (commands.push_bulk([]), b"PUSHB []\r\n"),
        (
            commands.push_bulk([JOB, {"jid": "12345678", "jobtype": "x", "args": []}]),
            b'PUSHB [{"jid":"abcdefgh12345678","jobtype":"add","args":[1,2]},'
            b'{"jid":"12345678","jobtype":"x","args":[]}]\r\n',
        ),
        (commands.fetch("default"), b"FETCH default\r\n"),
        (commands.fetch("critical", "default", "low"), b"FETCH critical default low\r\n"),
        (commands.ack("abcdefgh"), b'ACK {"jid":"abcdefgh"}\r\n'),
        (
            commands.fail("abcdefgh", errtype="RuntimeError", message="boom"),
            b'FAIL {"jid":"abcdefgh","errtype":"RuntimeError","message":"boom"}\r\n',
        ),
        (
            commands.fail("abcdefgh", errtype="E", message="m", backtrace=["a.py:1", "b.py:2"]),
            b'FAIL {"jid":"abcdefgh","errtype":"E","message":"m","backtrace":["a.py:1","b.py:2"]}\r\n',
        ),
        (
            commands.fail("abcdefgh", errtype="E", message="m", backtrace=[]),
            b'FAIL {"jid":"abcdefgh","errtype":"E","message":"m","backtrace":[]}\r\n',
        ),
        (commands.beat("w1"), b'BEAT {"wid":"w1"}\r\n'),
        (commands.beat("w1", current_state="quiet"), b'BEAT {"wid":"w1","current_state":"quiet"}\r\n'),
        (
            commands.beat("w1", current_state="terminate", rss_kb=1024),
            b'BEAT {"wid":"w1","current_state":"terminate","rss_kb":1024}\r\n',
        ),
        (commands.beat("w1", rss_kb=0), b'BEAT {"wid":"w1","rss_kb":0}\r\n'),
        (commands.queue_pause("q1"), b"QUEUE PAUSE q1\r\n"),
        (commands.queue_pause("q1", "q2"), b"QUEUE PAUSE q1 q2\r\n"),
        (commands.queue_pause("*"), b"QUEUE PAUSE *\r\n"),
        (commands.queue_resume("q1"), b"QUEUE RESUME q1\r\n"),
        (commands.queue_resume("*"), b"QUEUE RESUME *\r\n"),
        (commands.queue_remove("q1", "q2"), b"QUEUE REMOVE q1 q2\r\n"),
        (commands.queue_remove("*"), b"QUEUE REMOVE *\r\n"),
        (commands.queue_latency("q1"), b"QUEUE LATENCY q1\r\n"),
        (commands.queue_latency("q1", "q2"), b"QUEUE LATENCY q1 q2\r\n"),
        (commands.mutate("clear", "retries"), b'MUTATE {"cmd":"clear","target":"retries"}\r\n'),
        (commands.mutate("kill", "scheduled", {}), b'MUTATE {"cmd":"kill","target":"scheduled"}\r\n'),
        (
            commands.mutate("discard", "dead", {"jids": ["abcdefgh", "12345678"]}),
            b'MUTATE {"cmd":"discard","target":"dead","filter":{"jids":["abcdefgh","12345678"]}}\r\n',
        ),
        (
            commands.mutate("requeue", "retries", {"regexp": "*a b*", "jobtype": "x y"}),
            b'MUTATE {"cmd":"requeue","target":"retries","filter":{"regexp":"*a\\u0020b*","jobtype":"x\\u0020y"}}\r\n',
        ),
    ],
)
def test_exact_bytes(line: bytes, expected: bytes) -> None:
    assert line == expected


def test_beat_states() -> None:
    for state in ("running", "quiet", "terminate"):
        assert json_argument(commands.beat("w", current_state=state), b"BEAT") == {"wid": "w", "current_state": state}


def test_push_accepts_any_mapping_and_does_not_change_it() -> None:
    job = dict(JOB)
    assert commands.push(MappingProxyType(job)) == commands.push(job)
    assert job == JOB


# --------------------------------------------------------------------------------------------------------------
# A bare verb cannot be produced
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: commands.push(), id="push"),
        pytest.param(lambda: commands.push_bulk(), id="push_bulk"),
        pytest.param(lambda: commands.fetch(), id="fetch"),
        pytest.param(lambda: commands.ack(), id="ack"),
        pytest.param(lambda: commands.fail(), id="fail"),
        pytest.param(lambda: commands.fail("abcdefgh"), id="fail-no-errtype"),
        pytest.param(lambda: commands.fail("abcdefgh", errtype="E"), id="fail-no-message"),
        pytest.param(lambda: commands.beat(), id="beat"),
        pytest.param(lambda: commands.queue_pause(), id="queue_pause"),
        pytest.param(lambda: commands.queue_resume(), id="queue_resume"),
        pytest.param(lambda: commands.queue_remove(), id="queue_remove"),
        pytest.param(lambda: commands.queue_latency(), id="queue_latency"),
        pytest.param(lambda: commands.mutate(), id="mutate"),
        pytest.param(lambda: commands.mutate("clear"), id="mutate-no-target"),
        pytest.param(lambda: commands.hello(), id="hello"),
    ],
)
def test_required_argument_missing_is_a_type_error(call: Callable[[], bytes]) -> None:
    with pytest.raises(TypeError):
        call()


INVALID_CALLS = [
    pytest.param(lambda: commands.push({}), id="push-empty"),
    pytest.param(lambda: commands.push(None), id="push-none"),
    pytest.param(lambda: commands.push("PUSH"), id="push-str"),
    pytest.param(lambda: commands.push([JOB]), id="push-list"),
    pytest.param(lambda: commands.push_bulk([{}]), id="push_bulk-empty-job"),
    pytest.param(lambda: commands.push_bulk([None]), id="push_bulk-none-job"),
    pytest.param(lambda: commands.push_bulk([JOB, {"jid": "short"}]), id="push_bulk-one-bad"),
    pytest.param(lambda: commands.push_bulk("abc"), id="push_bulk-str"),
    pytest.param(lambda: commands.fetch(""), id="fetch-empty"),
    pytest.param(lambda: commands.fetch("a", ""), id="fetch-second-empty"),
    pytest.param(lambda: commands.fetch(None), id="fetch-none"),
    pytest.param(lambda: commands.ack(""), id="ack-empty"),
    pytest.param(lambda: commands.ack(None), id="ack-none"),
    pytest.param(lambda: commands.ack(12345678), id="ack-int"),
    pytest.param(lambda: commands.fail("", errtype="E", message="m"), id="fail-empty"),
    pytest.param(lambda: commands.fail(None, errtype="E", message="m"), id="fail-none"),
    pytest.param(lambda: commands.beat(""), id="beat-empty"),
    pytest.param(lambda: commands.beat(None), id="beat-none"),
    pytest.param(lambda: commands.beat("w", current_state="sleeping"), id="beat-bad-state"),
    pytest.param(lambda: commands.beat("w", current_state=""), id="beat-empty-state"),
    pytest.param(lambda: commands.beat("w", rss_kb=-1), id="beat-negative-rss"),
    pytest.param(lambda: commands.beat("w", rss_kb=1.5), id="beat-float-rss"),
    pytest.param(lambda: commands.beat("w", rss_kb=True), id="beat-bool-rss"),
    pytest.param(lambda: commands.beat("w", rss_kb="1"), id="beat-str-rss"),
    pytest.param(lambda: commands.queue_pause(""), id="queue_pause-empty"),
    pytest.param(lambda: commands.queue_resume(""), id="queue_resume-empty"),
    pytest.param(lambda: commands.queue_remove(""), id="queue_remove-empty"),
    pytest.param(lambda: commands.queue_latency(""), id="queue_latency-empty"),
    pytest.param(lambda: commands.queue_pause("a", ""), id="queue_pause-second-empty"),
    pytest.param(lambda: commands.queue_pause(None), id="queue_pause-none"),
    pytest.param(lambda: commands.mutate("", "dead"), id="mutate-empty-cmd"),
    pytest.param(lambda: commands.mutate("kill", ""), id="mutate-empty-target"),
]


@pytest.mark.parametrize("call", INVALID_CALLS)
def test_invalid_values_raise_invalid_command(call: Callable[[], bytes]) -> None:
    with pytest.raises(InvalidCommand) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ProtocolError)


TEXT = st.text(max_size=20)
QUEUE_TEXT = st.one_of(TEXT, st.sampled_from(["", " ", "*", "a b", "\n", "\r\n", "q\t", "PAUSE"]))

STRING_ENCODERS: list[tuple[str, Callable[[str], bytes]]] = [
    ("push-jid", lambda s: commands.push({"jid": s, "jobtype": "x", "args": []})),
    ("push-jobtype", lambda s: commands.push({"jid": "abcdefgh", "jobtype": s, "args": []})),
    ("push_bulk", lambda s: commands.push_bulk([{"jid": s, "jobtype": s, "args": [s]}])),
    ("fetch", lambda s: commands.fetch(s)),
    ("fetch-many", lambda s: commands.fetch(s, s)),
    ("ack", lambda s: commands.ack(s)),
    ("fail", lambda s: commands.fail(s, errtype=s, message=s, backtrace=[s])),
    ("beat", lambda s: commands.beat(s)),
    ("queue_pause", lambda s: commands.queue_pause(s)),
    ("queue_resume", lambda s: commands.queue_resume(s)),
    ("queue_remove", lambda s: commands.queue_remove(s)),
    ("queue_latency", lambda s: commands.queue_latency(s)),
    ("queue_pause-many", lambda s: commands.queue_pause(s, s)),
    ("mutate-regexp", lambda s: commands.mutate("kill", "dead", {"regexp": s})),
    ("mutate-jids", lambda s: commands.mutate("kill", "dead", {"jids": [s]})),
]


@pytest.mark.parametrize("encoder", [e for _, e in STRING_ENCODERS], ids=[n for n, _ in STRING_ENCODERS])
@given(value=QUEUE_TEXT)
@settings(max_examples=60)
def test_no_encoder_ever_produces_a_bare_verb(encoder: Callable[[str], bytes], value: str) -> None:
    try:
        line = encoder(value)
    except InvalidCommand:
        return
    assert line not in FORBIDDEN
    assert_one_line(line)
    verb, space, rest = line[:-2].partition(b" ")
    assert space
    assert rest
    if verb == b"QUEUE":
        sub, space, names = rest.partition(b" ")
        assert sub in (b"PAUSE", b"RESUME", b"REMOVE", b"LATENCY")
        assert space
        assert names
        assert names.strip() == names
        assert b"  " not in names


def test_forbidden_lines_are_not_reachable_with_empty_strings() -> None:
    for call in (
        lambda: commands.ack(""),
        lambda: commands.beat(""),
        lambda: commands.fail("", errtype="", message=""),
        lambda: commands.queue_pause(""),
        lambda: commands.queue_resume(""),
        lambda: commands.queue_remove(""),
    ):
        with pytest.raises(InvalidCommand):
            call()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: commands.ack("\ud800abcdefgh"), id="ack"),
        pytest.param(lambda: commands.fetch("q\udc80"), id="fetch"),
        pytest.param(lambda: commands.push({**JOB, "args": ["\ud800"]}), id="push"),
        pytest.param(lambda: commands.mutate("kill", "dead", {"regexp": "\ud800"}), id="mutate"),
    ],
)
def test_unencodable_text_is_an_invalid_command(call: Callable[[], bytes]) -> None:
    # A lone surrogate cannot be written as UTF-8; the encoders promise InvalidCommand for every bad value.
    with pytest.raises(InvalidCommand):
        call()


# --------------------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------------------


def test_json_is_compact_and_single_line() -> None:
    job = {
        "jid": "abcdefgh",
        "jobtype": "x",
        "args": ["line1\nline2", "cr\r\nlf", "tab\t", "u2028\u2028", {"a b": [1, 2.5, None, True]}],
        "custom": {"nested": {"k": "v\n"}},
    }
    line = commands.push(job)
    assert_one_line(line)
    body = argument(line, b"PUSH")
    assert b", " not in body
    assert b": " not in body
    assert json.loads(body) == job
    assert body == json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode()


def test_fail_message_with_newlines_stays_on_one_line() -> None:
    line = commands.fail("abcdefgh", errtype="E", message="a\nb\r\nc", backtrace=["x\ny"])
    assert_one_line(line)
    assert json_argument(line, b"FAIL")["message"] == "a\nb\r\nc"


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
))  # fmt: skip
@settings(max_examples=100)
def test_push_args_round_trip_on_one_line(value: Any) -> None:
    job = {"jid": "abcdefgh", "jobtype": "x", "args": [value]}
    line = commands.push(job)
    assert_one_line(line)
    assert json_argument(line, b"PUSH") == job


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_refused(bad: float) -> None:
    with pytest.raises(InvalidCommand):
        commands.push({**JOB, "args": [bad]})
    with pytest.raises(InvalidCommand):
        commands.push({**JOB, "custom": {"x": [bad]}})
    with pytest.raises(InvalidCommand):
        commands.push_bulk([{**JOB, "args": [bad]}])
    with pytest.raises(InvalidCommand):
        commands.hello({"v": 2, "x": bad})
    with pytest.raises(InvalidCommand):
        dumps(bad)


@pytest.mark.parametrize("bad", [object(), b"bytes", {1, 2}])
def test_values_json_cannot_carry_refused(bad: object) -> None:
    with pytest.raises(InvalidCommand):
        commands.push({**JOB, "args": [bad]})


def test_dumps_spaceless_round_trip() -> None:
    value = {"a b": ["c d", "\\ ", " "], "e": "f"}
    text = dumps_spaceless(value)
    assert " " not in text
    assert loads(text) == value
    assert loads(text.encode()) == value


# --------------------------------------------------------------------------------------------------------------
# push refuses what the server would refuse
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": "", "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": "short", "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": "1234567", "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": None, "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": "abcdefgh", "args": []}, "jobs must have a jobtype parameter"),
        ({"jid": "abcdefgh", "jobtype": "", "args": []}, "jobs must have a jobtype parameter"),
        ({"jid": "abcdefgh", "jobtype": "x"}, "jobs must have an args parameter"),
        ({"jid": "abcdefgh", "jobtype": "x", "args": None}, "jobs must have an args parameter"),
        (
            {"jid": "abcdefgh", "jobtype": "x", "args": [], "reserve_for": 86401},
            "jobs cannot be reserved for more than one day",
        ),
        ({"jid": "short"}, "jobs must have a reasonable jid parameter"),
        ({"jid": "abcdefgh"}, "jobs must have a jobtype parameter"),
    ],
)
def test_push_refuses_with_the_server_message(job: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCommand) as info:
        commands.push(job)
    assert str(info.value) == message


@pytest.mark.parametrize("at", ["tomorrow", "2026-01-01T00:00:00", "2026-01-01", "2026-13-01T00:00:00Z"])
def test_push_refuses_a_bad_at(at: str) -> None:
    with pytest.raises(InvalidCommand) as info:
        commands.push({**JOB, "at": at})
    assert str(info.value).startswith(f'invalid timestamp for \'at\': "{at}": parsing time "{at}"')


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("args", {}, "json: cannot unmarshal object into Go struct field Job.args of type []interface {}"),
        ("jobtype", 5, "json: cannot unmarshal number into Go struct field Job.jobtype of type string"),
        ("jid", 12345678, "json: cannot unmarshal number into Go struct field Job.jid of type string"),
        ("retry", 1.5, "json: cannot unmarshal number 1.5 into Go struct field Job.retry of type int"),
        ("retry", "5", "json: cannot unmarshal string into Go struct field Job.retry of type int"),
    ],
)
def test_push_refuses_wrong_field_types(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidCommand) as info:
        commands.push({**JOB, field: value})
    assert str(info.value).endswith(message)


@pytest.mark.parametrize(
    "job",
    [
        {"jid": "12345678", "jobtype": "x", "args": []},
        {"jid": "ääää", "jobtype": "x", "args": []},  # 8 bytes of UTF-8
        {**JOB, "reserve_for": 86400},
        {**JOB, "at": ""},
        {**JOB, "at": "2026-11-23T08:31:23.13308082Z"},
        {**JOB, "at": "2026-11-23T09:31:25+00:00"},
        {**JOB, "retry": -1, "retry_extra": "ignored"},
    ],
)
def test_push_accepts_what_the_server_accepts(job: dict[str, Any]) -> None:
    assert json_argument(commands.push(job), b"PUSH") == job


# --------------------------------------------------------------------------------------------------------------
# MUTATE
# --------------------------------------------------------------------------------------------------------------

SPACEY = st.builds(lambda a, b: f"{a} {b}", st.text(max_size=10), st.text(max_size=10))


@given(
    cmd=st.sampled_from(sorted(commands.MUTATE_COMMANDS)),
    target=st.sampled_from(sorted(commands.MUTATE_TARGETS)),
    regexp=SPACEY,
    jobtype=st.none() | SPACEY,
    jids=st.none() | st.lists(SPACEY, min_size=1, max_size=3),
)
@settings(max_examples=150)
def test_mutate_never_contains_a_space(
    cmd: str, target: str, regexp: str, jobtype: str | None, jids: list[str] | None
) -> None:
    filter_: dict[str, Any] = {"regexp": regexp}
    if jobtype is not None:
        filter_["jobtype"] = jobtype
    if jids is not None:
        filter_["jids"] = jids
    line = commands.mutate(cmd, target, filter_)
    assert_one_line(line)
    assert line.count(b" ") == 1
    verb, payload = line[:-2].split(b" ")
    assert verb == b"MUTATE"
    assert json.loads(payload) == {"cmd": cmd, "target": target, "filter": filter_}


@pytest.mark.parametrize("cmd", ["delete", "CLEAR", "Kill", "clear ", None])
def test_mutate_unknown_cmd(cmd: Any) -> None:
    with pytest.raises(InvalidCommand):
        commands.mutate(cmd, "dead")


@pytest.mark.parametrize("target", ["working", "default", "retry", "DEAD", None])
def test_mutate_unknown_target(target: Any) -> None:
    with pytest.raises(InvalidCommand):
        commands.mutate("kill", target)


@pytest.mark.parametrize(
    "filter_",
    [
        {"queue": "default"},
        {"jid": "abcdefgh"},
        {"regexp": "*", "unknown": 1},
        {"jids": "abcdefgh"},
        {"jids": []},
        {"jids": [""]},
        {"jids": [1]},
        {"jids": ["abcdefgh", None]},
        {"regexp": ""},
        {"regexp": None},
        {"jobtype": ""},
        {"jobtype": 5},
    ],
)
def test_mutate_bad_filter(filter_: dict[str, Any]) -> None:
    with pytest.raises(InvalidCommand):
        commands.mutate("kill", "dead", filter_)


@pytest.mark.parametrize("jids", [None, 5])
def test_mutate_jids_not_iterable_is_an_invalid_command(jids: Any) -> None:
    try:
        line = commands.mutate("discard", "dead", {"jids": jids})
    except InvalidCommand:
        return
    # The only other acceptable outcome: no jids filter at all is sent (never a TypeError).
    assert "jids" not in json_argument(line, b"MUTATE").get("filter", {})


def test_mutate_jids_from_an_iterator_are_kept() -> None:
    # The jids the caller named must reach the server; silently sending [] changes which jobs the MUTATE touches.
    try:
        line = commands.mutate("discard", "dead", {"jids": iter(["abcdefgh", "12345678"])})
    except InvalidCommand:
        return
    assert json_argument(line, b"MUTATE")["filter"]["jids"] == ["abcdefgh", "12345678"]


# --------------------------------------------------------------------------------------------------------------
# Queue names
# --------------------------------------------------------------------------------------------------------------

QUEUE_ENCODERS = {
    "fetch": (commands.fetch, b"FETCH "),
    "queue_pause": (commands.queue_pause, b"QUEUE PAUSE "),
    "queue_resume": (commands.queue_resume, b"QUEUE RESUME "),
    "queue_remove": (commands.queue_remove, b"QUEUE REMOVE "),
    "queue_latency": (commands.queue_latency, b"QUEUE LATENCY "),
}


@pytest.mark.parametrize("name", sorted(QUEUE_ENCODERS))
@pytest.mark.parametrize("queue", ["a b", "a\tb", "a\nb", "a\r", " a", "a ", "\u00a0", "q\u2028"])
def test_queue_names_with_whitespace_refused(name: str, queue: str) -> None:
    encoder, _ = QUEUE_ENCODERS[name]
    with pytest.raises(InvalidCommand):
        encoder(queue)
    with pytest.raises(InvalidCommand):
        encoder("ok", queue)


@pytest.mark.parametrize("name", ["queue_pause", "queue_resume", "queue_remove"])
def test_wildcard_allowed(name: str) -> None:
    encoder, prefix = QUEUE_ENCODERS[name]
    assert encoder("*") == prefix + b"*\r\n"


@pytest.mark.parametrize("name", ["fetch", "queue_latency"])
def test_wildcard_refused(name: str) -> None:
    encoder, _ = QUEUE_ENCODERS[name]
    with pytest.raises(InvalidCommand):
        encoder("*")
    with pytest.raises(InvalidCommand):
        encoder("default", "*")


@pytest.mark.parametrize("name", sorted(QUEUE_ENCODERS))
@given(queues=st.lists(TEXT, min_size=1, max_size=4))
@settings(max_examples=60)
def test_queue_encoders_output(name: str, queues: list[str]) -> None:
    encoder, prefix = QUEUE_ENCODERS[name]
    try:
        line = encoder(*queues)
    except InvalidCommand:
        assert any(not q or any(c.isspace() for c in q) or q == "*" for q in queues)
        return
    assert all(q and not any(c.isspace() for c in q) for q in queues)
    assert line == prefix + " ".join(queues).encode() + b"\r\n"
