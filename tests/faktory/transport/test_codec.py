"""The codec on its own: queue names, priorities, message to job and back (no server, no clock)."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_faktory.protocol import commands
from celery_faktory.protocol.payload import QUEUE_NAME, parse_timestamp
from celery_faktory.transport import codec
from celery_faktory.transport.options import TransportOptions

NOW = 1_800_000_000.0
OPTIONS = TransportOptions()
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def message(
    body: bytes,
    *,
    content_type: str = "application/json",
    encoding: str = "utf-8",
    headers: dict[str, Any] | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A message as kombu's virtual channel hands it to ``_put``."""
    return {
        "body": b64(body),
        "content-type": content_type,
        "content-encoding": encoding,
        "headers": headers or {},
        "properties": {
            "delivery_mode": 2,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "tag-1",
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            **properties,
        },
    }


def task_message(args: list[Any], kwargs: dict[str, Any], *, task: str = "proj.add", **headers: Any) -> dict[str, Any]:
    """A protocol-2 JSON Celery task message."""
    body = json.dumps([args, kwargs, EMBED]).encode()
    all_headers = {
        "lang": "py",
        "task": task,
        "id": "task-id-1",
        "eta": None,
        "expires": None,
        "retries": 0,
        "timelimit": [None, None],
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": repr(kwargs),
        **headers,
    }
    return message(body, headers=all_headers, correlation_id="task-id-1", reply_to="")


def encode(msg: dict[str, Any], queue: str = "celery", **options: Any) -> dict[str, Any]:
    return codec.encode_message(msg, queue, jid="j" * 32, now=NOW, options=TransportOptions(**options)).job


def go_floats(value: Any) -> Any:
    """What Faktory 1.9.4 gives back for a JSON value: every number through a 64-bit float."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 1e21 else number
    if isinstance(value, list):
        return [go_floats(item) for item in value]
    return {key: go_floats(item) for key, item in value.items()}


def round_trip(job: dict[str, Any], queue: str = "celery", *, floats: bool = False) -> dict[str, Any]:
    """Send the job through JSON the way a server would, then decode it."""
    wire = json.loads(json.dumps(job))
    if floats:
        wire = go_floats(wire)
    return codec.decode_job(wire, queue)


def body_of(payload: dict[str, Any]) -> bytes:
    return base64.b64decode(payload["body"])


# -- queue names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("celery", "celery"),
        ("celery@host.celery.pidbox", "celery_40host.celery.pidbox"),
        ("a:b", "a_3ab"),
        ("snake_case", "snake__case"),
        ("düsseldorf", "d_c3_bcsseldorf"),
        ("a b", "a_20b"),
    ],
)
def test_queue_names_are_escaped_readably(name: str, encoded: str) -> None:
    assert codec.encode_queue_name(name) == encoded
    assert codec.decode_queue_name(encoded) == name


@given(st.text(min_size=1))
def test_every_queue_name_round_trips_into_a_valid_faktory_name(name: str) -> None:
    encoded = codec.encode_queue_name(name)
    assert QUEUE_NAME.match(encoded)
    assert codec.decode_queue_name(encoded) == name


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("_.-p0123456789"), min_size=1))
def test_priority_queues_never_collide_with_plain_names(name: str) -> None:
    for step in OPTIONS.priority_steps:
        queue = codec.faktory_queue(name, step, OPTIONS)
        assert QUEUE_NAME.match(queue)
        assert codec.parse_faktory_queue(queue, OPTIONS) == (name, step)


def test_lone_surrogates_and_long_names_round_trip() -> None:
    for name in ("\udc80x", "q" * 5000, "x" * 300 + "@" * 300):
        assert codec.decode_queue_name(codec.encode_queue_name(name)) == name


@pytest.mark.parametrize("bad", ["_", "a_", "a_zz", "a_4", "_p3", "a_p03", "a_c3"])
def test_decoding_rejects_names_the_encoding_never_makes(bad: str) -> None:
    with pytest.raises(ValueError, match=r"queue name|priority|UTF-8|empty"):
        codec.decode_queue_name(bad)


def test_empty_names_have_no_faktory_queue() -> None:
    with pytest.raises(ValueError, match="empty"):
        codec.encode_queue_name("")


def test_prefix_and_suffix() -> None:
    options = TransportOptions(queue_name_prefix="app.", priority_steps=(0, 5))
    assert codec.faktory_queue("q", 0, options) == "app.q"
    assert codec.faktory_queue("q", 5, options) == "app.q_p5"
    assert codec.parse_faktory_queue("app.q_p5", options) == ("q", 5)
    assert codec.parse_faktory_queue("app.q", options) == ("q", 0)
    assert codec.parse_faktory_queue("other.q", options) is None
    assert codec.parse_faktory_queue("app.q_p3", options) is None  # not one of the steps
    assert codec.parse_faktory_queue("app.q_p0", options) is None  # the lowest step has no suffix


def test_priority_steps() -> None:
    steps = (0, 3, 6, 9)
    assert [codec.priority_step(p, steps) for p in (0, 1, 2, 3, 5, 6, 8, 9, 200)] == [0, 0, 0, 3, 3, 6, 6, 9, 9]
    assert codec.priority_step(None, steps) == 0
    assert codec.priority_step("7", steps) == 6
    assert codec.priority_step(-4, (2, 5)) == 2


def test_fetch_plan_is_priority_major_and_rotates() -> None:
    plan = codec.fetch_plan(["a", "b", "a"], OPTIONS, rotation=0)
    assert [name for name, _ in plan] == ["a_p9", "b_p9", "a_p6", "b_p6", "a_p3", "b_p3", "a", "b"]
    rotated = codec.fetch_plan(["a", "b"], OPTIONS, rotation=1)
    assert [name for name, _ in rotated][:2] == ["b_p9", "a_p9"]
    assert dict(rotated)["b_p3"] == "b"
    desc = codec.fetch_plan(["a"], TransportOptions(priority_order="desc"), rotation=0)
    assert [name for name, _ in desc] == ["a", "a_p3", "a_p6", "a_p9"]
    assert codec.fetch_plan([], OPTIONS) == []


# -- encoding ----------------------------------------------------------------------------------------


def test_a_json_task_is_a_native_job() -> None:
    job = encode(task_message([2, "three"], {"x": {"y": [1]}}))
    assert job["jobtype"] == "proj.add"
    assert job["args"] == [2, "three"]
    assert job["custom"]["kwargs"] == {"x": {"y": [1]}}
    assert job["custom"]["kq"] == "celery"
    assert job["custom"]["kombu"]["embed"] == EMBED
    assert "body" not in job["custom"]["kombu"]
    assert "delivery_tag" not in job["custom"]["kombu"]["properties"]
    assert job["retry"] == 25
    assert job["reserve_for"] == 1800
    assert job["queue"] == "celery"
    assert job["jid"] == "j" * 32
    assert "at" not in job
    assert "expires_at" not in job["custom"]
    commands.push(job)  # the client's own checks accept it


def test_native_round_trip_rebuilds_an_equivalent_message() -> None:
    original = task_message([1, "ü", None, [True]], {"k": 0.5})
    payload = round_trip(encode(original))
    assert json.loads(body_of(payload)) == [[1, "ü", None, [True]], {"k": 0.5}, EMBED]
    assert payload["headers"] == original["headers"]
    assert payload["content-type"] == "application/json"
    assert payload["content-encoding"] == "utf-8"
    properties = payload["properties"]
    assert properties["delivery_tag"] == "j" * 32
    assert properties["correlation_id"] == "task-id-1"
    assert properties["delivery_info"] == {
        "exchange": "",
        "routing_key": "celery",
        "faktory_jid": "j" * 32,
        "faktory_queue": "celery",
    }


@pytest.mark.parametrize(
    "args",
    [[1.0, 2], [2**60], [-(2**53) - 1], [{"deep": [3.0]}], [1e300]],
)
def test_numbers_faktory_would_change_travel_in_the_exact_body_too(args: list[Any]) -> None:
    original = task_message(args, {"n": 12345678901234567890})
    job = encode(original)
    assert job["args"] == args  # still readable by foreign workers
    assert job["custom"]["kombu"]["body"] == original["body"]
    payload = round_trip(job, floats=True)
    assert payload["body"] == original["body"]


def test_non_finite_numbers_force_an_envelope() -> None:
    original = message(b"[[NaN], {}, {}]", headers={"task": "t", "id": "i"})
    job = encode(original)
    assert job["args"] == []
    assert "kwargs" not in job["custom"]
    assert job["custom"]["kombu"]["body"] == original["body"]
    commands.push(job)


def test_headers_with_inexact_numbers_are_kept_exactly() -> None:
    original = task_message([], {}, tenant=2**62, ratio=2.0)
    payload = round_trip(encode(original), floats=True)
    assert payload["headers"]["tenant"] == 2**62
    assert isinstance(payload["headers"]["ratio"], float)


@pytest.mark.parametrize(
    "msg",
    [
        message(pickle.dumps({"a": 1}), content_type="application/x-python-serialize", encoding="binary"),
        message(zlib.compress(b"[[1], {}, {}]"), headers={"task": "t", "id": "i", "compression": "application/x-gzip"}),
        message(json.dumps({"Hello": "Wörld"}).encode(), headers={"k1": "v1"}),
        message(b'{"method": "ping"}', headers={"clock": 1}),
        message(json.dumps([[1], {}, EMBED]).encode(), headers={"task": "t"}),  # no id: not protocol 2
        message(b"not json", headers={"task": "t", "id": "i"}),
        message(json.dumps({"task": "t", "args": []}).encode(), headers={"task": "t", "id": "i"}),
    ],
    ids=["pickle", "compressed", "plain-json", "pidbox-like", "no-id", "not-json", "not-a-list"],
)
def test_everything_else_is_an_envelope_that_round_trips_byte_for_byte(msg: dict[str, Any]) -> None:
    job = encode(msg, "celery@host.celery.pidbox")
    assert job["args"] == []
    assert job["custom"]["kombu"]["body"] == msg["body"]
    assert job["queue"] == "celery_40host.celery.pidbox"
    payload = round_trip(job, "celery@host.celery.pidbox", floats=True)
    assert payload["body"] == msg["body"]
    assert payload["headers"] == msg["headers"]
    assert payload["content-type"] == msg["content-type"]
    assert payload["content-encoding"] == msg["content-encoding"]


def test_jobtype_is_the_task_name_or_kombu() -> None:
    assert encode(message(b"{}"))["jobtype"] == "kombu"
    assert encode(message(pickle.dumps(1), headers={"task": "proj.t", "id": "i"}))["jobtype"] == "proj.t"


def test_job_args_repr_and_none() -> None:
    msg = task_message([1], {"a": 2})
    repr_job = encode(msg, job_args="repr")
    assert repr_job["args"] == ["(1,)", "{'a': 2}"]
    assert repr_job["custom"]["kombu"]["body"] == msg["body"]
    assert "kwargs" not in repr_job["custom"]
    none_job = encode(msg, job_args="none")
    assert none_job["args"] == []
    assert json.loads(body_of(round_trip(none_job))) == [[1], {"a": 2}, EMBED]


def test_priority_selects_the_sub_queue_and_survives() -> None:
    msg = task_message([], {})
    msg["properties"]["priority"] = 7
    job = encode(msg, "q", queue_name_prefix="p.")
    assert job["queue"] == "p.q_p6"
    assert round_trip(job, "q")["properties"]["priority"] == 7


def test_eta_beyond_the_threshold_becomes_at() -> None:
    soon = "2027-01-15T08:00:10+00:00"  # NOW is 2027-01-15T08:00:00Z
    later = "2027-01-15T11:00:00.250000+02:00"
    assert "at" not in encode(task_message([], {}, eta=soon))
    job = encode(task_message([], {}, eta=later))
    assert job["at"] == "2027-01-15T09:00:00.25Z"
    assert encode(task_message([], {}, eta=soon), eta_threshold=5)["at"] == "2027-01-15T08:00:10Z"
    naive = encode(task_message([], {}, eta="2027-01-15T09:00:00"))
    assert naive["at"] == "2027-01-15T09:00:00Z"
    assert "at" not in encode(task_message([], {}, eta="yesterday"))
    assert parse_timestamp(job["at"]) / 1e9 > NOW


def test_reserve_for_follows_time_limits_and_overrides() -> None:
    assert encode(task_message([], {}, timelimit=[3600, 3000]))["reserve_for"] == 3660
    assert encode(task_message([], {}, timelimit=[10.5, None]))["reserve_for"] == 1800
    assert encode(task_message([], {}, faktory_reserve_for=7200))["reserve_for"] == 7200
    assert encode(task_message([], {}, faktory_reserve_for="90"), reserve_for=60)["reserve_for"] == 90
    assert encode(task_message([], {}, faktory_reserve_for=10))["reserve_for"] == 1800
    encoded = codec.encode_message(
        task_message([], {}, timelimit=[90000, None]), "celery", jid="j" * 32, now=NOW, options=OPTIONS
    )
    assert encoded.job["reserve_for"] == 86400
    assert any("at most 86400" in warning for warning in encoded.warnings)


def test_ttl_is_emulated_except_for_celery_expires() -> None:
    plain = encode(message(b"{}", expiration="2000"))
    assert plain["custom"]["expires_at"] == "2027-01-15T08:00:02Z"
    assert not codec.is_expired(plain, NOW + 1.9)
    assert codec.is_expired(plain, NOW + 2)
    celery = encode(task_message([], {}, expires="2027-01-15T08:00:02+00:00"))
    assert "expires_at" not in celery["custom"]
    with_expiration = task_message([], {}, expires="2027-01-15T08:00:02+00:00")
    with_expiration["properties"]["expiration"] = "2000"
    assert "expires_at" not in encode(with_expiration)["custom"]
    assert not codec.is_expired({"jid": "x"}, NOW)


def test_the_input_message_is_not_changed() -> None:
    msg = task_message([1], {})
    snapshot = json.dumps(msg, sort_keys=True)
    encode(msg)
    assert json.dumps(msg, sort_keys=True) == snapshot


# -- decoding ----------------------------------------------------------------------------------------


def test_a_failure_block_marks_a_redelivery() -> None:
    job = json.loads(json.dumps(encode(task_message([], {}))))
    job["failure"] = {"retry_count": 0, "remaining": 25, "errtype": "ReservationExpired", "message": "x"}
    payload = codec.decode_job(job, "celery")
    assert payload["properties"]["delivery_info"]["redelivered"] is True
    assert payload["headers"]["redelivered"] is True


def test_requeued_copies_are_fresh_and_redelivered() -> None:
    job = json.loads(json.dumps(encode(task_message([5], {}))))
    job |= {"enqueued_at": "x", "failure": {"retry_count": 1}, "at": "2020-01-01T00:00:00Z", "created_at": "c"}
    copy = codec.requeue_job(job, jid="n" * 32)
    assert copy["jid"] == "n" * 32
    assert not {"enqueued_at", "failure", "at"} & set(copy)
    assert copy["created_at"] == "c"
    assert copy["custom"]["redelivered"] is True
    assert "redelivered" not in job["custom"]
    payload = codec.decode_job(copy, "celery")
    assert payload["properties"]["delivery_info"]["redelivered"] is True
    assert payload["headers"]["id"] == "task-id-1"
    commands.push(copy)


def test_foreign_jobs_become_celery_task_messages() -> None:
    job = {
        "jid": "0123456789abcdef",
        "jobtype": "proj.add",
        "args": [2, 3],
        "queue": "celery",
        "retry": 25,
        "custom": {"kwargs": {"z": 1}, "trace": "abc"},
    }
    assert codec.is_foreign(job)
    payload = codec.decode_job(job, "celery")
    assert json.loads(body_of(payload)) == [[2, 3], {"z": 1}, EMBED]
    headers = payload["headers"]
    assert headers["task"] == "proj.add"
    assert headers["id"] == headers["root_id"] == "0123456789abcdef"
    assert headers["retries"] == 0
    assert headers["eta"] is None
    assert headers["expires"] is None
    assert payload["content-type"] == "application/json"
    assert payload["properties"]["correlation_id"] == "0123456789abcdef"
    assert payload["properties"]["delivery_info"]["routing_key"] == "celery"

    retried = dict(job, failure={"retry_count": 2, "remaining": 22})
    assert codec.decode_job(retried, "celery")["headers"]["retries"] == 3
    bare = codec.decode_job({"jid": "abcdefgh", "jobtype": "t", "args": None}, "q")
    assert json.loads(body_of(bare))[:2] == [[], {}]


def test_a_requeued_foreign_job_keeps_its_task_id() -> None:
    job = {"jid": "0123456789abcdef", "jobtype": "t", "args": [], "queue": "celery", "retry": 3}
    copy = codec.requeue_job(job, jid="n" * 32)
    assert codec.is_foreign(copy)
    assert copy["custom"] == {"celery_task_id": "0123456789abcdef", "redelivered": True}
    payload = codec.decode_job(copy, "celery")
    assert payload["headers"]["id"] == "0123456789abcdef"
    assert payload["properties"]["delivery_tag"] == "n" * 32


def test_damaged_envelopes_are_reported() -> None:
    job = json.loads(json.dumps(encode(task_message([1], {}))))
    del job["custom"]["kwargs"]
    with pytest.raises(codec.MalformedJob):
        codec.decode_job(job, "celery")
    job["custom"]["kombu"] = {"headers": "nope"}
    with pytest.raises(codec.MalformedJob):
        codec.decode_job(job, "celery")
