"""Job payload validation and timestamps (reference sections 3.3, 5.2 and 7)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_faktory.protocol.payload import (
    MAX_RESERVE_FOR,
    format_timestamp,
    job_problem,
    job_type_problem,
    parse_timestamp,
    queue_name_problem,
)

NS = 1_000_000_000
#: 2026-11-23T08:31:23Z in Unix seconds.
T0 = int(datetime(2026, 11, 23, 8, 31, 23, tzinfo=timezone.utc).timestamp())
GOOD = {"jid": "abcdefgh", "jobtype": "x", "args": []}

# --------------------------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unix_ns", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (NS // 2, "1970-01-01T00:00:00.5Z"),
        (T0 * NS, "2026-11-23T08:31:23Z"),
        (T0 * NS + 133080820, "2026-11-23T08:31:23.13308082Z"),
        (T0 * NS + 100_000_000, "2026-11-23T08:31:23.1Z"),
        (T0 * NS + 120_000, "2026-11-23T08:31:23.00012Z"),
        (T0 * NS + 999_999_999, "2026-11-23T08:31:23.999999999Z"),
        (-NS, "1969-12-31T23:59:59Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_timestamp(unix_ns: int, text: str) -> None:
    assert format_timestamp(unix_ns) == text
    assert parse_timestamp(text) == unix_ns


@given(st.integers(min_value=-(10**9) * NS, max_value=7_000_000_000 * NS))  # about 1938 to 2191
@settings(max_examples=200)
def test_timestamp_round_trip(unix_ns: int) -> None:
    text = format_timestamp(unix_ns)
    assert text.endswith("Z")
    if "." in text:
        fraction = text[text.index(".") + 1 : -1]
        assert 1 <= len(fraction) <= 9
        assert not fraction.endswith("0")
    assert parse_timestamp(text) == unix_ns


@pytest.mark.parametrize("digits", range(10))
def test_parse_zero_to_nine_fraction_digits(digits: int) -> None:
    fraction = "123456789"[:digits]
    text = "2026-11-23T08:31:23" + (f".{fraction}" if digits else "") + "Z"
    assert parse_timestamp(text) == T0 * NS + int(fraction.ljust(9, "0") or "0")


def test_parse_trailing_zeros_kept_by_the_sender() -> None:
    assert parse_timestamp("2026-11-23T08:31:23.500000000Z") == T0 * NS + 500_000_000
    assert parse_timestamp("2026-11-23T08:31:23.000Z") == T0 * NS


@pytest.mark.parametrize(
    ("text", "delta_seconds"),
    [
        ("2026-11-23T08:31:23+00:00", 0),
        ("2026-11-23T10:31:23+02:00", 0),
        ("2026-11-23T03:01:23-05:30", 0),
        ("2026-11-23T08:31:23-00:00", 0),
        ("2026-11-23T08:31:23z", 0),
        ("2026-11-24T00:31:23+16:00", 0),
        ("2026-11-23T08:31:23+01:00", -3600),
    ],
)
def test_parse_offsets(text: str, delta_seconds: int) -> None:
    assert parse_timestamp(text) == (T0 + delta_seconds) * NS


def test_parse_offset_with_fraction() -> None:
    assert parse_timestamp("2026-11-23T10:31:23.176512+02:00") == T0 * NS + 176_512_000


@pytest.mark.parametrize(
    "text",
    [
        "tomorrow",
        "",
        "2026-11-23T08:31:23",  # naive: no offset
        "2026-11-23T08:31:23.176512",  # naive with fraction
        "2026-11-23 08:31:23Z",
        "2026-11-23",
        "2026-11-23T08:31Z",
        "2026-11-23T08:31:23.Z",
        "2026-11-23T08:31:23.1234567890Z",  # ten digits
        "2026-11-23T08:31:23+0200",
        "2026-11-23T08:31:23+02",
        "2026-11-23T08:31:23 Z",
        "2026-11-23T08:31:23Z ",
        " 2026-11-23T08:31:23Z",
        "2026-11-23T08:31:23Zjunk",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T08:60:00Z",
        "2026-11-23T08:31:23+24:00",
        "2026-11-23T08:31:23+02:60",
        "26-11-23T08:31:23Z",
    ],
)
def test_parse_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"^parsing time ") as info:
        parse_timestamp(text)
    assert str(info.value).startswith(f'parsing time "{text}"')


def test_parse_tomorrow_message() -> None:
    with pytest.raises(ValueError, match="cannot parse") as info:
        parse_timestamp("tomorrow")
    assert str(info.value).startswith('parsing time "tomorrow" as "2006-01-02T15:04:05.999999999Z07:00": ')


# --------------------------------------------------------------------------------------------------------------
# job_problem
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "problem"),
    [
        ({}, "jobs must have a reasonable jid parameter"),
        ({"jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": "", "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": "1234567", "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jid": "äää", "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),  # 6 bytes
        ({"jid": "abcdefgh", "args": []}, "jobs must have a jobtype parameter"),
        ({"jid": "abcdefgh", "jobtype": "", "args": []}, "jobs must have a jobtype parameter"),
        ({"jid": "abcdefgh", "jobtype": None, "args": []}, "jobs must have a jobtype parameter"),
        ({"jid": "abcdefgh", "jobtype": "x"}, "jobs must have an args parameter"),
        ({"jid": "abcdefgh", "jobtype": "x", "args": None}, "jobs must have an args parameter"),
        ({**GOOD, "reserve_for": MAX_RESERVE_FOR + 1}, "jobs cannot be reserved for more than one day"),
        ({**GOOD, "reserve_for": 10**9}, "jobs cannot be reserved for more than one day"),
    ],
)
def test_job_problem_messages(job: dict[str, Any], problem: str) -> None:
    assert job_problem(job) == problem


@pytest.mark.parametrize(
    ("job", "problem"),
    [
        # Every check fails: the jid is reported first.
        ({"jid": "short", "reserve_for": 10**6, "at": "tomorrow"}, "jobs must have a reasonable jid parameter"),
        # jid fine: jobtype before args.
        ({"jid": "abcdefgh", "reserve_for": 10**6, "at": "tomorrow"}, "jobs must have a jobtype parameter"),
        # jobtype fine: args before reserve_for and at.
        (
            {"jid": "abcdefgh", "jobtype": "x", "reserve_for": 10**6, "at": "tomorrow"},
            "jobs must have an args parameter",
        ),
        # reserve_for before at.
        ({**GOOD, "reserve_for": 10**6, "at": "tomorrow"}, "jobs cannot be reserved for more than one day"),
    ],
)
def test_job_problem_order(job: dict[str, Any], problem: str) -> None:
    assert job_problem(job) == problem


def test_job_problem_bad_at() -> None:
    problem = job_problem({**GOOD, "at": "tomorrow"})
    assert problem is not None
    assert problem.startswith('invalid timestamp for \'at\': "tomorrow": parsing time "tomorrow"')


@pytest.mark.parametrize(
    "jid",
    ["12345678", "abcdefgh", "ääää", "€€€", "1234567890123456", "a" * 1000],
)
def test_jid_of_at_least_eight_bytes_is_fine(jid: str) -> None:
    assert len(jid.encode()) >= 8
    assert job_problem({**GOOD, "jid": jid}) is None


@pytest.mark.parametrize(
    "job",
    [
        GOOD,
        {**GOOD, "args": [1, "a", None, {"k": [1]}]},
        {**GOOD, "reserve_for": MAX_RESERVE_FOR},
        {**GOOD, "reserve_for": 0},
        {**GOOD, "at": ""},
        {**GOOD, "at": None},
        {**GOOD, "at": "2026-11-23T09:31:25.176512Z"},
        {**GOOD, "at": "2026-11-23T09:31:25+00:00"},
        {**GOOD, "retry": 0, "queue": "critical", "custom": {}, "unknown_field": 123},
    ],
)
def test_job_problem_accepts(job: dict[str, Any]) -> None:
    assert job_problem(job) is None


# --------------------------------------------------------------------------------------------------------------
# job_type_problem
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "problem"),
    [
        ({**GOOD, "jid": 12345678}, "json: cannot unmarshal number into Go struct field Job.jid of type string"),
        (
            {**GOOD, "args": {"a": 1}},
            "json: cannot unmarshal object into Go struct field Job.args of type []interface {}",
        ),
        ({**GOOD, "args": {}}, "json: cannot unmarshal object into Go struct field Job.args of type []interface {}"),
        ({**GOOD, "args": "x"}, "json: cannot unmarshal string into Go struct field Job.args of type []interface {}"),
        ({**GOOD, "jobtype": 5}, "json: cannot unmarshal number into Go struct field Job.jobtype of type string"),
        ({**GOOD, "jobtype": True}, "json: cannot unmarshal bool into Go struct field Job.jobtype of type string"),
        ({**GOOD, "jobtype": []}, "json: cannot unmarshal array into Go struct field Job.jobtype of type string"),
        ({**GOOD, "retry": 1.5}, "json: cannot unmarshal number 1.5 into Go struct field Job.retry of type int"),
        ({**GOOD, "retry": "3"}, "json: cannot unmarshal string into Go struct field Job.retry of type int"),
        ({**GOOD, "retry": True}, "json: cannot unmarshal bool into Go struct field Job.retry of type int"),
        ({**GOOD, "queue": 1}, "json: cannot unmarshal number into Go struct field Job.queue of type string"),
        ({**GOOD, "custom": []},
         "json: cannot unmarshal array into Go struct field Job.custom of type map[string]interface {}"),
        ({**GOOD, "reserve_for": "60"},
         "json: cannot unmarshal string into Go struct field Job.reserve_for of type int"),
        ({**GOOD, "at": 5}, "json: cannot unmarshal number into Go struct field Job.at of type string"),
    ],
)  # fmt: skip
def test_job_type_problem_fields(job: dict[str, Any], problem: str) -> None:
    assert job_type_problem(job) == problem


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([GOOD], "json: cannot unmarshal array into Go value of type client.Job"),
        ([], "json: cannot unmarshal array into Go value of type client.Job"),
        ("job", "json: cannot unmarshal string into Go value of type client.Job"),
        (5, "json: cannot unmarshal number into Go value of type client.Job"),
        (True, "json: cannot unmarshal bool into Go value of type client.Job"),
    ],
)
def test_job_type_problem_body(body: object, problem: str) -> None:
    assert job_type_problem(body) == problem


@pytest.mark.parametrize(
    "job",
    [
        GOOD,
        {},
        {"jid": None, "jobtype": None, "args": None, "retry": None, "custom": None},
        {**GOOD, "retry": -1, "reserve_for": 60, "backtrace": 5, "custom": {"k": 1}, "failure": {"retry_count": 0}},
        {**GOOD, "unknown": {"anything": [1.5]}},
    ],
)
def test_job_type_problem_accepts(job: dict[str, Any]) -> None:
    assert job_type_problem(job) is None


def test_job_type_problem_failure_counters() -> None:
    problem = job_type_problem({**GOOD, "failure": {"retry_count": "1"}})
    assert problem is not None
    assert "Failure.retry_count" in problem
    problem = job_type_problem({**GOOD, "failure": {"remaining": 2.5}})
    assert problem is not None
    assert "Failure.remaining" in problem


# --------------------------------------------------------------------------------------------------------------
# queue_name_problem
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", ["default", "a", "Q-1_2.3", "0", "a" * 200])
def test_queue_name_ok(queue: str) -> None:
    assert queue_name_problem(queue) is None


@pytest.mark.parametrize("queue", ["bad queue", "", "q!", "ä", "q/x", "*"])
def test_queue_name_problem_text(queue: str) -> None:
    assert queue_name_problem(queue) == f'cannot get "{queue}" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z'


@pytest.mark.parametrize(
    ("queue", "quoted"),
    [("q\n", r'"q\n"'), ("\tq", r'"\tq"'), ('a"b', r'"a\"b"'), ("a\\b", r'"a\\b"'), ("\x01", r'"\x01"')],
)
def test_queue_name_problem_quotes_like_go(queue: str, quoted: str) -> None:
    # Go's %q, as a real Faktory 1.9.4 writes the name in this message.
    assert queue_name_problem(queue) == f"cannot get {quoted} queue: queue names must match \\A[a-zA-Z0-9._-]+\\z"


def test_queue_name_problem_exact_example() -> None:
    assert queue_name_problem("bad queue") == (
        r'cannot get "bad queue" queue: queue names must match \A[a-zA-Z0-9._-]+\z'
    )
