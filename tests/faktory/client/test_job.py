"""Job: defaults, the payload it pushes, ``at`` in UTC, validation and the round trip of a fetched job (§7)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from celery_faktory.client import Client
from celery_faktory.errors import InvalidCommand
from celery_faktory.job import Job, new_jid
from tests.faktory.client.helpers import fail_one, take_from_set
from tests.faktory.wire import unique

PLUS_TWO = timezone(timedelta(hours=2))


# -- defaults and payload -----------------------------------------------------------------------------


def test_defaults() -> None:
    job = Job("SendEmail")
    assert re.fullmatch(r"[0-9a-f]{24}", job.jid)
    assert job.queue == "default"
    assert job.retry == 25
    assert job.args == []
    assert isinstance(job.args, list)
    assert job.at is None
    assert job.failure is None
    assert job.retry_count == 0
    assert Job("SendEmail").jid != job.jid
    assert re.fullmatch(r"[0-9a-f]{24}", new_jid())


def test_to_dict_always_carries_retry() -> None:
    payload = Job("SendEmail", jid="abcdefgh12").to_dict()
    assert payload == {"jid": "abcdefgh12", "jobtype": "SendEmail", "args": [], "queue": "default", "retry": 25}
    for retry in (0, -1, 3):
        assert Job("x", retry=retry).to_dict()["retry"] == retry


def test_args_are_copied_into_a_list() -> None:
    job = Job("Add", (1, 2, 3))
    assert job.args == [1, 2, 3]
    assert job.to_dict()["args"] == [1, 2, 3]
    assert Job("Add", iter([1])).args == [1]


def test_optional_fields() -> None:
    payload = Job(
        "x", ["a"], jid="abcdefgh12", queue="q", retry=-1, reserve_for=600, backtrace=10, custom={"k": [1]}
    ).to_dict()
    assert payload == {
        "jid": "abcdefgh12",
        "jobtype": "x",
        "args": ["a"],
        "queue": "q",
        "retry": -1,
        "reserve_for": 600,
        "backtrace": 10,
        "custom": {"k": [1]},
    }


def test_to_json_is_compact() -> None:
    job = Job("SendEmail", ["a b", {"k": 1}, [1, 2]], jid="abcdefgh12", custom={"x": "ü"})
    text = job.to_json()
    assert "\n" not in text
    assert json.loads(text) == job.to_dict()
    assert text == json.dumps(job.to_dict(), separators=(",", ":"), ensure_ascii=False)
    assert ": " not in text
    assert ", " not in text


# -- at -----------------------------------------------------------------------------------------------


def test_at_from_an_aware_datetime_is_utc_with_z() -> None:
    job = Job("x", at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=PLUS_TWO))
    assert job.to_dict()["at"] == "2030-01-02T01:04:05Z"
    micro = Job("x", at=datetime(2030, 1, 2, 0, 30, 0, 123456, tzinfo=PLUS_TWO))
    assert micro.to_dict()["at"] == "2030-01-01T22:30:00.123456Z"
    utc = Job("x", at=datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc))
    assert utc.to_dict()["at"] == "2030-06-01T12:00:00Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-02T03:04:05+02:00", "2030-01-02T01:04:05Z"),
        ("2030-01-02T03:04:05.250-01:30", "2030-01-02T04:34:05.25Z"),
        ("2030-01-02T01:04:05Z", "2030-01-02T01:04:05Z"),
        ("2030-01-02T01:04:05.123456789Z", "2030-01-02T01:04:05.123456789Z"),
        ("2030-01-02t01:04:05z", "2030-01-02T01:04:05Z"),
    ],
)
def test_at_string_is_reformatted_to_utc(text: str, expected: str) -> None:
    assert Job("x", at=text).to_dict()["at"] == expected


def test_naive_datetime_is_refused() -> None:
    job = Job("x", at=datetime(2030, 1, 2, 3, 4, 5))
    with pytest.raises(InvalidCommand, match="timezone"):
        job.to_dict()
    with pytest.raises(InvalidCommand, match="timezone"):
        job.to_json()


@pytest.mark.parametrize("text", ["tomorrow", "2030-01-02T03:04:05", "2030-01-02 03:04:05Z"])
def test_bad_at_string_is_refused(text: str) -> None:
    job = Job("x", at=text)
    with pytest.raises(InvalidCommand):
        job.to_dict()


# -- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("jobtype", ["", None, 42])
def test_jobtype_required(jobtype: object) -> None:
    with pytest.raises(InvalidCommand, match="jobtype"):
        Job(jobtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [{"a": 1}, "abc", b"abc"])
def test_args_must_be_a_list(args: object) -> None:
    with pytest.raises(InvalidCommand, match="args"):
        Job("x", args)  # type: ignore[arg-type]


def test_nan_is_refused_locally() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(InvalidCommand):
            Job("x", [value]).to_json()


def test_push_without_a_client() -> None:
    with pytest.raises(InvalidCommand, match="client"):
        Job("x").push()


# -- from_dict ----------------------------------------------------------------------------------------


def test_from_dict_of_a_server_payload() -> None:
    payload = {
        "retry": 3,
        "failure": {
            "failed_at": "2026-11-23T08:31:38.219227011Z",
            "next_at": "2026-11-23T08:31:59.219231988Z",
            "message": "m",
            "errtype": "E",
            "retry_count": 2,
            "remaining": 1,
        },
        "custom": {"trace": "abc"},
        "jid": "mut000001",
        "queue": "mq",
        "jobtype": "mutjob",
        "created_at": "2026-11-23T08:31:38.218399663Z",
        "enqueued_at": "2026-11-23T08:31:38.218403217Z",
        "at": "2026-11-23T08:31:38Z",
        "args": [1, "two"],
        "reserve_for": 600,
        "backtrace": 5,
    }
    job = Job.from_dict(payload)
    assert (job.jid, job.jobtype, job.queue, job.retry, job.args) == ("mut000001", "mutjob", "mq", 3, [1, "two"])
    assert job.failure == payload["failure"]
    assert job.retry_count == 3  # failed retry_count + 1 times before
    assert job.enqueued_at == payload["enqueued_at"]
    assert job.created_at == payload["created_at"]
    assert (job.reserve_for, job.backtrace, job.custom) == (600, 5, {"trace": "abc"})
    again = job.to_dict()
    assert again["at"] == "2026-11-23T08:31:38Z"
    assert again["created_at"] == payload["created_at"]


def test_from_dict_defaults_and_zero_retry() -> None:
    job = Job.from_dict({"jid": "abcdefgh12", "jobtype": "x"})
    assert (job.args, job.queue, job.retry, job.retry_count) == ([], "default", 25, 0)
    assert Job.from_dict({"jid": "abcdefgh12", "jobtype": "x", "retry": 0}).retry == 0
    assert Job.from_dict({"jid": "abcdefgh12", "jobtype": "x", "retry": -1}).retry == -1
    assert Job.from_dict({"jid": "abcdefgh12", "jobtype": "x", "failure": {"retry_count": 0}}).retry_count == 1


def test_round_trip() -> None:
    job = Job("x", [1, {"a": None}], queue="q", retry=7, custom={"c": True}, reserve_for=120)
    assert Job.from_dict(job.to_dict()).to_dict() == job.to_dict()


# -- against the server -------------------------------------------------------------------------------


def test_client_job_push(client: Client, queue: str) -> None:
    job = client.job("SendEmail", 42, "x", queue=queue)
    assert job.client is client
    assert job.args == [42, "x"]
    jid = job.push()
    assert jid == job.jid
    fetched = client.fetch(queue)
    assert fetched is not None
    client.ack(fetched.jid)
    assert (fetched.jid, fetched.jobtype, fetched.args, fetched.queue) == (jid, "SendEmail", [42, "x"], queue)
    assert fetched.client is client


def test_job_push_with_a_client(client: Client, queue: str) -> None:
    job = Job("SendEmail", [1], queue=queue)
    assert job.push(client) == job.jid
    fetched = client.fetch(queue)
    assert fetched is not None
    client.ack(fetched.jid)
    assert fetched.jid == job.jid


def test_fetched_payload_round_trip_with_failure(client: Client, queue: str, discard_later: list[str]) -> None:
    job = Job("Flaky", ["a", 1], queue=queue, retry=5, custom={"trace": unique()}, reserve_for=300, backtrace=3)
    discard_later.append(job.jid)
    first = fail_one(client, queue, job, RuntimeError("boom happened"))
    assert first.failure is None
    assert first.retry_count == 0
    assert first.enqueued_at
    assert first.created_at
    again = take_from_set(client, client.retries, job.jid, queue)
    assert again is not None
    assert again.jid == job.jid
    assert again.failure is not None
    assert again.failure["errtype"] == "RuntimeError"
    assert again.failure["message"] == "boom happened"
    assert again.failure["retry_count"] == 0
    assert again.retry_count == 1
    assert (again.retry, again.custom, again.reserve_for, again.backtrace) == (5, job.custom, 300, 3)
    assert again.args == ["a", 1]
