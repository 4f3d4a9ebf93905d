"""The ACK/FAIL reporter on several connections: every outcome is answered once, and close() sends them all."""

from __future__ import annotations

import threading

import pytest

from celery_faktory import Client, Job
from celery_faktory.client.connection import Connection
from celery_faktory.worker.reporter import Report, Reporter


class Counting:
    """A connection factory that remembers every connection it opened."""

    def __init__(self, client: Client) -> None:
        self.config = client.config
        self.opened: list[Connection] = []
        self.lock = threading.Lock()

    def __call__(self) -> Connection:
        connection = Connection(self.config)
        with self.lock:
            self.opened.append(connection)
        return connection


def busy(client: Client) -> int:
    """Jobs the server holds reservations for."""
    return int(client.info()["faktory"]["tasks"]["Busy"]["size"])


def reserve(client: Client, queue: str, count: int) -> list[str]:
    """Push ``count`` jobs and FETCH them all: jids the server now holds reservations for."""
    client.push_bulk(Job("x", [n], queue=queue) for n in range(count))
    jids = []
    while len(jids) < count:
        job = client.fetch(queue)
        assert job is not None
        jids.append(job.jid)
    return jids


@pytest.mark.parametrize("connections", [1, 3])
def test_outcomes_queued_before_close_are_all_sent_over_every_connection(
    client: Client, queue: str, connections: int
) -> None:
    before = busy(client)
    jids = reserve(client, queue, 300)
    assert busy(client) >= before + 300
    connect = Counting(client)
    reporter = Reporter(connect, connections=connections)
    reporter.start()
    for index, jid in enumerate(jids):
        reporter.put(Report.ack(jid) if index % 10 else Report.fail(jid, "Boom", "failed on purpose"))
    reporter.close(10)  # right away: the outcomes still queued go out before the threads END
    assert (reporter.acked, reporter.failed, reporter.rejected) == (270, 30, 0)
    assert len(connect.opened) == connections
    assert busy(client) <= before  # every reservation was settled by its ACK or FAIL
    assert all(connection.broken for connection in connect.opened)  # each said END and closed


def test_send_from_the_caller_uses_a_connection_of_its_own(client: Client, queue: str) -> None:
    """Without started threads (a worker's run_one) outcomes go out on the caller's connection."""
    jids = reserve(client, queue, 5)
    connect = Counting(client)
    reporter = Reporter(connect, connections=2)
    reporter.send([Report.ack(jid) for jid in jids])
    assert reporter.acked == 5
    assert len(connect.opened) == 1
    reporter.close(1)
    assert all(connection.broken for connection in connect.opened)


def test_a_reporter_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="at least one connection"):
        Reporter(lambda: None, connections=0)  # type: ignore[arg-type,return-value]
