"""Every client command against the tests' Faktory (ours, or a real one through FAKTORY_URL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from celery_faktory.client import Client, Connection
from celery_faktory.config import ClientConfig
from celery_faktory.errors import InvalidCommand, JobRejected, ServerError
from celery_faktory.job import Job
from celery_faktory.protocol import Bulk, Error, Simple, commands
from celery_faktory.server import FaktoryServer
from tests.faktory.client.helpers import RequestSpy, fail_one, fetch_all, take_from_set
from tests.faktory.wire import unique

# -- PUSH, FETCH, ACK -----------------------------------------------------------------------------------


def test_push_fetch_ack(client: Client, queue: str) -> None:
    job = Job("SendEmail", [1, "two", {"three": [3]}], queue=queue, custom={"k": "v"})
    assert client.push(job) == job.jid
    assert client.queue_sizes()[queue] == 1
    fetched = client.fetch(queue)
    assert fetched is not None
    assert (fetched.jid, fetched.jobtype, fetched.args, fetched.queue) == (job.jid, "SendEmail", job.args, queue)
    assert fetched.custom == {"k": "v"}
    assert fetched.retry == 25
    assert fetched.created_at
    assert fetched.enqueued_at
    assert fetched.failure is None
    client.ack(fetched.jid)
    assert client.queue_sizes().get(queue, 0) == 0


def test_push_mapping(client: Client, queue: str) -> None:
    jid = unique("jid")
    assert client.push({"jid": jid, "jobtype": "Raw", "args": [1], "queue": queue}) == jid
    fetched = fetch_all(client, queue, 1)[0]
    assert (fetched.jid, fetched.jobtype, fetched.args, fetched.retry) == (jid, "Raw", [1], 25)


def test_fetch_of_an_empty_queue_returns_none(client: Client, queue: str) -> None:
    started = time.monotonic()
    assert client.fetch(queue) is None
    assert time.monotonic() - started >= 0.3  # it did block (0.5 s on our server, 2 s on Faktory)


def test_fetch_order_is_the_order_of_the_queues(client: Client, faktory_url: str) -> None:
    first, second = unique("cqa"), unique("cqb")
    try:
        client.push(Job("x", ["second"], queue=second))
        client.push(Job("x", ["first"], queue=first))
        jobs = [client.fetch(first, second), client.fetch(first, second)]
        for job in jobs:
            assert job is not None
            client.ack(job.jid)
        assert [job.args for job in jobs if job] == [["first"], ["second"]]
    finally:
        client.queue_remove(first, second)


def test_fetch_refuses_bad_queue_names_locally(client: Client) -> None:
    for names in (("a b",), ("*",), ("",)):
        with pytest.raises(InvalidCommand):
            client.fetch(*names)


def test_scheduled_push(client: Client, queue: str, discard_later: list[str]) -> None:
    job = Job("Later", queue=queue, at=datetime.now(timezone.utc) + timedelta(hours=1))
    discard_later.append(job.jid)
    client.push(job)
    assert client.queue_sizes().get(queue, 0) == 0
    fetched = take_from_set(client, client.scheduled, job.jid, queue)
    assert fetched is not None
    assert fetched.at == job.to_dict()["at"]


def test_past_at_is_enqueued_now(client: Client, queue: str) -> None:
    job = Job("Past", queue=queue, at=datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=-5))))
    client.push(job)
    fetched = fetch_all(client, queue, 1)[0]
    assert fetched.jid == job.jid
    assert fetched.at == "2000-01-01T05:00:00Z"


def test_pipeline(faktory_url: str, queue: str) -> None:
    job = Job("Piped", queue=queue)
    with Connection(ClientConfig.from_url(faktory_url)) as connection:
        replies = connection.pipeline(
            [commands.push(job.to_dict()), commands.queue_latency(queue), b"BOGUS\r\n", commands.fetch(queue)]
        )
        assert replies[0] == Simple("OK")
        assert isinstance(replies[1], Bulk)
        assert replies[2] == Error("ERR", "unknown command BOGUS")
        assert isinstance(replies[3], Bulk)
        assert replies[3].value is not None
        assert Job.from_dict(json.loads(replies[3].value)).jid == job.jid
        assert connection.request(commands.ack(job.jid)) == Simple("OK")


# -- FAIL -----------------------------------------------------------------------------------------------


def _raise_value_error() -> None:
    raise ValueError("boom")


def test_fail_with_an_exception(client: Client, queue: str, discard_later: list[str]) -> None:
    job = Job("Failing", queue=queue)
    discard_later.append(job.jid)
    try:
        _raise_value_error()
    except ValueError as exc:
        error = exc
    fail_one(client, queue, job, error)
    again = take_from_set(client, client.retries, job.jid, queue)
    assert again is not None
    failure = again.failure
    assert failure is not None
    assert failure["errtype"] == "ValueError"
    assert failure["message"] == "boom"
    backtrace = failure["backtrace"]
    assert backtrace
    assert any("_raise_value_error" in line for line in backtrace)
    assert any("test_commands.py" in line for line in backtrace)
    assert failure["retry_count"] == 0
    assert failure["remaining"] == 25


def test_fail_with_a_string(client: Client, queue: str, discard_later: list[str]) -> None:
    job = Job("Failing", queue=queue)
    discard_later.append(job.jid)
    fail_one(client, queue, job, "it broke")
    again = take_from_set(client, client.retries, job.jid, queue)
    assert again is not None
    assert again.failure is not None
    assert again.failure["message"] == "it broke"
    assert again.failure["errtype"] == "unknown"
    assert "backtrace" not in again.failure


def test_fail_overrides(client: Client, queue: str, discard_later: list[str]) -> None:
    job = Job("Failing", queue=queue)
    discard_later.append(job.jid)
    client.push(job)
    assert client.fetch(queue) is not None
    client.fail(job.jid, KeyError("k"), errtype="Custom", backtrace=["a.py:1 in f", "b.py:2 in g"])
    again = take_from_set(client, client.retries, job.jid, queue)
    assert again is not None
    assert again.failure is not None
    assert again.failure["errtype"] == "Custom"
    assert again.failure["message"] == "'k'"
    assert again.failure["backtrace"] == ["a.py:1 in f", "b.py:2 in g"]


def test_fail_of_an_exception_never_raised(client: Client, queue: str, discard_later: list[str]) -> None:
    job = Job("Failing", queue=queue)
    discard_later.append(job.jid)
    fail_one(client, queue, job, RuntimeError())  # no traceback, no message
    again = take_from_set(client, client.retries, job.jid, queue)
    assert again is not None
    assert again.failure is not None
    assert again.failure["errtype"] == "RuntimeError"
    assert again.failure["message"] == "RuntimeError"


def test_fail_of_an_unknown_jid_raises(client: Client) -> None:
    jid = unique("nojob")
    with pytest.raises(ServerError) as info:
        client.fail(jid, "x")
    assert not isinstance(info.value, JobRejected)
    assert info.value.code == "ERR"
    assert info.value.message == f"Job not found {jid}"


def test_retry_zero_and_negative(client: Client, queue: str, discard_later: list[str]) -> None:
    dropped = Job("Once", queue=queue, retry=0)
    dead = Job("Dead", queue=queue, retry=-1)
    discard_later.extend([dropped.jid, dead.jid])
    fail_one(client, queue, dropped)
    fail_one(client, queue, dead)
    assert take_from_set(client, client.retries, dropped.jid, queue) is None
    assert take_from_set(client, client.dead, dropped.jid, queue) is None
    back = take_from_set(client, client.dead, dead.jid, queue)
    assert back is not None
    assert back.retry == -1


# -- PUSHB ----------------------------------------------------------------------------------------------


def test_push_bulk_all_accepted(client: Client, queue: str) -> None:
    jobs = [Job("Bulk", [n], queue=queue) for n in range(5)]
    assert client.push_bulk(jobs) == {}
    fetched = fetch_all(client, queue, 5)
    assert [job.jid for job in fetched] == [job.jid for job in jobs]
    assert client.push_bulk([]) == {}


def test_push_bulk_returns_rejected_mappings(client: Client, queue: str) -> None:
    """Bad jobs given as mappings come back as rejections; the good ones are enqueued (reference §6.6)."""
    good = Job("Bulk", [1], queue=queue)
    no_type = {"jid": unique("notype"), "args": [2], "queue": queue}
    short = {"jid": "shrt", "jobtype": "Bulk", "args": [3], "queue": queue}
    bad_queue = {"jid": unique("badq"), "jobtype": "Bulk", "args": [4], "queue": "bad queue!"}
    rejected = client.push_bulk([good, no_type, short, bad_queue])
    assert rejected == {
        no_type["jid"]: "jobs must have a jobtype parameter",
        "shrt": "jobs must have a reasonable jid parameter",
        bad_queue["jid"]: 'cannot get "bad queue!" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z',
    }
    assert fetch_all(client, queue, 1)[0].jid == good.jid


def test_push_bulk_chunks(client: Client, queue: str) -> None:
    spy = RequestSpy(client)
    jobs = [Job("Bulk", [n], queue=queue) for n in range(10)]
    assert client.push_bulk(jobs, chunk_size=3) == {}
    assert spy.verbs() == ["PUSHB"] * 4
    assert client.queue_sizes()[queue] == 10
    fetched = fetch_all(client, queue, 10)
    assert sorted(job.args[0] for job in fetched) == list(range(10))


def test_push_bulk_accepts_a_generator(client: Client, queue: str) -> None:
    assert client.push_bulk((Job("Bulk", [n], queue=queue) for n in range(4)), chunk_size=2) == {}
    assert len(fetch_all(client, queue, 4)) == 4


# -- INFO and QUEUE -------------------------------------------------------------------------------------


def test_info_shape(client: Client) -> None:
    info = client.info()
    assert isinstance(info["now"], str)
    assert info["server_utc_time"].endswith("UTC")
    faktory = info["faktory"]
    assert isinstance(faktory["queues"], dict)
    assert set(faktory["sets"]) >= {"dead", "retries", "scheduled", "working"}
    assert set(faktory["tasks"]) >= {"Busy", "Dead", "Retries", "Scheduled", "Workers"}
    for key in ("total_failures", "total_processed", "total_enqueued", "total_queues"):
        assert isinstance(faktory[key], int)
    server = info["server"]
    assert server["description"] == "Faktory"
    assert isinstance(server["faktory_version"], str)
    assert server["connections"] >= 1
    for key in ("uptime", "command_count", "used_memory_mb"):
        assert isinstance(server[key], int)


def test_queue_sizes(client: Client, queue: str) -> None:
    other = unique("cq")
    try:
        client.push_bulk([Job("x", queue=queue) for _ in range(3)] + [Job("x", queue=other)])
        sizes = client.queue_sizes()
        assert sizes[queue] == 3
        assert sizes[other] == 1
        assert all(isinstance(size, int) for size in sizes.values())
        fetch_all(client, queue, 3)
        fetch_all(client, other, 1)
    finally:
        client.queue_remove(other)


def test_queue_pause_and_resume(client: Client, queue: str) -> None:
    job = Job("Paused", queue=queue)
    client.push(job)
    client.queue_pause(queue)
    try:
        assert client.fetch(queue) is None
        assert client.queue_sizes()[queue] == 1  # a paused queue keeps its jobs
    finally:
        client.queue_resume(queue)
    assert fetch_all(client, queue, 1)[0].jid == job.jid


def test_queue_remove(client: Client, queue: str) -> None:
    client.push_bulk([Job("x", queue=queue) for _ in range(2)])
    assert client.queue_sizes()[queue] == 2
    client.queue_remove(queue)
    assert client.queue_sizes().get(queue, 0) == 0
    client.queue_remove(unique("never-seen"))  # unknown queues are fine


def test_queue_latency(client: Client, queue: str) -> None:
    empty = unique("cq")
    client.push(Job("x", queue=queue))
    time.sleep(0.3)
    latency = client.queue_latency(queue, empty)
    assert set(latency) == {queue, empty}
    assert 0.2 <= latency[queue] < 30
    assert latency[empty] == 0
    assert all(isinstance(value, float) for value in latency.values())
    fetch_all(client, queue, 1)


def test_queue_commands_refuse_bad_names_locally(client: Client) -> None:
    with pytest.raises(InvalidCommand):
        client.queue_latency("*")
    with pytest.raises(InvalidCommand):
        client.queue_pause("a b")
    with pytest.raises(InvalidCommand):
        client.queue_remove("")


# -- MUTATE ---------------------------------------------------------------------------------------------


def test_kill_by_regexp_with_a_space(client: Client, queue: str, discard_later: list[str]) -> None:
    token = unique("tok")
    job = Job("Greeter", [f"hello world {token}"], queue=queue)
    discard_later.append(job.jid)
    fail_one(client, queue, job)
    client.retries.kill(regexp=f"*hello world {token}*")
    assert take_from_set(client, client.dead, job.jid, queue) is not None


def test_kill_then_discard_by_jid(client: Client, queue: str, discard_later: list[str]) -> None:
    job = Job("x", queue=queue)
    discard_later.append(job.jid)
    fail_one(client, queue, job)
    client.retries.kill(jids=[job.jid])
    client.dead.discard(jids=[job.jid])
    assert take_from_set(client, client.dead, job.jid, queue) is None
    assert take_from_set(client, client.retries, job.jid, queue) is None


def test_requeue_retries_by_jid(client: Client, queue: str, discard_later: list[str]) -> None:
    job, other = Job("x", queue=queue), Job("x", queue=queue)
    discard_later.extend([job.jid, other.jid])
    fail_one(client, queue, job)
    fail_one(client, queue, other)
    client.retries.requeue(jids=job.jid)  # a single jid as a str is taken as one jid
    back = fetch_all(client, queue, 1)[0]
    assert back.jid == job.jid
    assert back.failure is not None  # requeue keeps the failure block
    client.retries.discard(jids=[other.jid])
    assert take_from_set(client, client.retries, other.jid, queue) is None


def test_mutate_by_jobtype(client: Client, queue: str, discard_later: list[str]) -> None:
    jobtype = unique("Type")
    job, bystander = Job(jobtype, queue=queue), Job("Bystander", queue=queue)
    discard_later.extend([job.jid, bystander.jid])
    fail_one(client, queue, job)
    fail_one(client, queue, bystander)
    client.retries.kill(jobtype=jobtype)
    assert take_from_set(client, client.dead, job.jid, queue) is not None
    assert take_from_set(client, client.dead, bystander.jid, queue) is None
    assert take_from_set(client, client.retries, bystander.jid, queue) is not None


def test_mutate_by_regexp_and_jobtype(client: Client, queue: str, discard_later: list[str]) -> None:
    token = unique("tok")
    match, wrong_type = Job("A", [token], queue=queue), Job("B", [token], queue=queue)
    discard_later.extend([match.jid, wrong_type.jid])
    fail_one(client, queue, match)
    fail_one(client, queue, wrong_type)
    client.retries.discard(regexp=f"*{token}*", jobtype="A")
    assert take_from_set(client, client.retries, match.jid, queue) is None
    assert take_from_set(client, client.retries, wrong_type.jid, queue) is not None


def test_scheduled_set(client: Client, queue: str, discard_later: list[str]) -> None:
    token = unique("unique")
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    kept, killed, discarded = (Job("Sched", [token, n], queue=queue, at=later) for n in range(3))
    discard_later.extend([kept.jid, killed.jid, discarded.jid])
    client.push_bulk([kept, killed, discarded])
    client.scheduled.kill(jids=[killed.jid])
    client.scheduled.discard(regexp=f'*"{token}",2*')
    assert take_from_set(client, client.dead, killed.jid, queue) is not None
    assert take_from_set(client, client.scheduled, discarded.jid, queue) is None
    assert take_from_set(client, client.scheduled, kept.jid, queue) is not None


@pytest.mark.faktory_server_only
def test_clear(faktory_server_factory: Callable[..., FaktoryServer]) -> None:
    server = faktory_server_factory()
    with Client(server.url) as client:
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        client.push_bulk([Job("x", queue="q", at=later) for _ in range(3)])
        for _ in range(2):
            client.push(Job("x", queue="q"))
            job = client.fetch("q")
            assert job is not None
            client.fail(job.jid, "x")
        client.retries.kill(jids=[server.jobs("retries")[0]["jid"]])
        assert [len(server.jobs(name)) for name in ("scheduled", "retries", "dead")] == [3, 1, 1]
        client.scheduled.clear()
        assert [len(server.jobs(name)) for name in ("scheduled", "retries", "dead")] == [0, 1, 1]
        client.retries.clear()
        client.dead.clear()
        assert [len(server.jobs(name)) for name in ("scheduled", "retries", "dead")] == [0, 0, 0]


def test_mutate_filter_validation(client: Client) -> None:
    with pytest.raises(InvalidCommand):
        client.retries.kill(jids=[1])  # type: ignore[list-item]
    with pytest.raises(InvalidCommand):
        client.retries.kill(regexp=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidCommand):
        client.dead.discard(jobtype=["x"])  # type: ignore[arg-type]
    with pytest.raises(InvalidCommand):
        client.mutate("explode", "dead")
    with pytest.raises(InvalidCommand):
        client.mutate("clear", "working")


# -- FLUSH (the only test that flushes: on a private server) -------------------------------------------


@pytest.mark.faktory_server_only
def test_flush(faktory_server_factory: Callable[..., FaktoryServer]) -> None:
    server = faktory_server_factory()
    with Client(server.url) as client:
        client.push(Job("x", queue="q"))
        client.push(Job("x", queue="q", at=datetime.now(timezone.utc) + timedelta(hours=1)))
        client.flush()
        assert server.queue("q") == []
        assert server.jobs("scheduled") == []
        assert client.fetch("q") is None


def test_push_many_pipelines_every_job_and_reports_refusals(client: Client, queue: str) -> None:
    jobs = [Job("x", [n], queue=queue) for n in range(250)]
    bad = {"jid": "shrt", "jobtype": "x", "args": [], "queue": queue}
    assert client.push_many([*jobs, bad], window=100) == {"shrt": "jobs must have a reasonable jid parameter"}
    fetched = []
    while (job := client.fetch(queue)) is not None:
        fetched.append(job.args[0])
        client.ack(job.jid)
    assert fetched == list(range(250))
