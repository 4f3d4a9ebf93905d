"""PUSHB and pipelined PUSH fanned out over several pooled connections (``connections=``), and :func:`fan_out`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from celery_faktory.client import Client, Connection
from celery_faktory.client.fanout import fan_out
from celery_faktory.errors import ConnectionLost
from celery_faktory.job import Job
from celery_faktory.protocol import Simple, commands
from celery_faktory.server import FaktoryServer, Fault
from tests.faktory.client.helpers import fetch_all


class CountingFactory:
    """Opens connections for a pool and remembers how many it opened."""

    def __init__(self, client: Client) -> None:
        self.config = client.config
        self.opened = 0
        self._lock = threading.Lock()

    def __call__(self) -> Connection:
        with self._lock:
            self.opened += 1
        return Connection(self.config)


def test_push_bulk_over_several_connections_pushes_every_job_once(client: Client, queue: str) -> None:
    factory = CountingFactory(client)
    client._pool._factory = factory
    jobs = [Job("Bulk", [n], queue=queue) for n in range(90)]
    bad = {"jid": "shrt", "jobtype": "Bulk", "args": [], "queue": queue}
    assert client.push_bulk([*jobs, bad], chunk_size=10, connections=3) == {
        "shrt": "jobs must have a reasonable jid parameter"
    }
    assert factory.opened == 3
    fetched = fetch_all(client, queue, 90)
    assert sorted(job.args[0] for job in fetched) == list(range(90))
    assert client.fetch(queue) is None


def test_push_many_over_several_connections_pushes_every_job_once(client: Client, queue: str) -> None:
    jobs = [Job("x", [n], queue=queue) for n in range(250)]
    bad = {"jid": "shrt", "jobtype": "x", "args": [], "queue": queue}
    assert client.push_many([*jobs, bad], window=20, connections=4) == {
        "shrt": "jobs must have a reasonable jid parameter"
    }
    fetched = fetch_all(client, queue, 250)
    assert sorted(job.args[0] for job in fetched) == list(range(250))


def test_a_busy_pool_lends_what_it_can_spare(faktory_url: str, queue: str) -> None:
    with Client(faktory_url, pool_size=2) as client:
        pool = client._pool
        held = pool.acquire()
        second = pool.try_acquire()
        assert second is not None
        assert pool.try_acquire() is None  # none to spare: no waiting
        pool.release(second)
        try:  # one connection left for a fan-out that would like four
            assert client.push_bulk([Job("x", [n], queue=queue) for n in range(30)], chunk_size=5, connections=4) == {}
        finally:
            pool.release(held)
        assert len(fetch_all(client, queue, 30)) == 30


def test_abandoning_a_fan_out_leaves_no_unread_reply_in_the_pool(client: Client, queue: str) -> None:
    lines = [commands.push(Job("x", [n], queue=queue).to_dict()) for n in range(40)]
    answers = fan_out(client._pool, ((n, [line]) for n, line in enumerate(lines)), width=2)
    (first, _), replies = next(answers)
    assert first == 0
    assert replies == [Simple("OK")]
    answers.close()  # batches still in flight: their connections are closed, not pooled
    assert client.info()["server"]  # the next command reads its own reply
    assert client.queue_sizes()[queue] >= 1


@pytest.mark.faktory_server_only
def test_a_chunk_whose_connection_drops_is_sent_again(
    faktory_server_factory: Callable[..., FaktoryServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = faktory_server_factory()
    with Client(server.url) as client, caplog.at_level(logging.WARNING, logger="celery_faktory.client"):
        server.inject_fault("PUSHB", Fault(drop_after=0))
        jobs = [Job("x", [n], queue="q") for n in range(40)]
        assert client.push_bulk(jobs, chunk_size=5, connections=3) == {}
        assert {copy["jid"] for copy in server.queue("q")} == {job.jid for job in jobs}
        server.inject_fault("PUSH", Fault(drop_after=0))
        more = [Job("x", [n], queue="r") for n in range(40)]
        assert client.push_many(more, window=5, connections=3) == {}
        assert {copy["jid"] for copy in server.queue("r")} == {job.jid for job in more}
    assert "sending a PUSHB again" in caplog.text
    assert "sending 5 commands again" in caplog.text


@pytest.mark.faktory_server_only
def test_without_retry_a_dropped_chunk_raises(faktory_server_factory: Callable[..., FaktoryServer]) -> None:
    server = faktory_server_factory()
    with Client(server.url) as client:
        server.inject_fault("PUSHB", Fault(drop_after=0))
        with pytest.raises(ConnectionLost):
            client.push_bulk([Job("x", [n], queue="q") for n in range(40)], chunk_size=5, connections=3, retry=False)
        assert client.info()["server"]  # the pool is still usable
