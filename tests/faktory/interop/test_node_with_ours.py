"""Interop both ways between the reference Node client and this package's Client and Worker."""

from __future__ import annotations

import collections
import threading
from typing import Any

from celery_faktory import Client, Job
from celery_faktory.worker import JobContext, Registry, Worker
from tests.faktory.interop.conftest import NodeClient
from tests.faktory.interop.test_node_client import PUSH_SCRIPT, WORK_SCRIPT, _assert_not_reserved, _events
from tests.faktory.wire import wait_until


def test_node_pushes_and_our_worker_runs(node_client: NodeClient, faktory_url: str, interop_queue: str) -> None:
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()
    registry = Registry()

    def record(*args: Any, job: JobContext) -> None:
        with lock:
            seen.append({"jid": job.jid, "jobtype": job.jobtype, "args": list(args), "custom": job.custom})

    registry.add("NodeInteropSingle", record)
    registry.add("NodeInteropBulk", record)
    events = node_client.run(PUSH_SCRIPT, url=faktory_url, env={"INTEROP_QUEUE": interop_queue}, timeout=30)
    (pushed,) = _events(events, "pushed")
    (bulk,) = _events(events, "bulk")
    sent = [pushed["payload"], *bulk["payloads"]]
    with Worker(faktory_url, queues=[interop_queue], concurrency=4, registry=registry) as worker:
        worker.start()
        wait_until(lambda: len(seen) == len(sent), timeout=20)
    assert worker.stats().acked == len(sent)
    by_jid = {job["jid"]: job for job in seen}
    assert collections.Counter(job["jid"] for job in seen) == collections.Counter(job["jid"] for job in sent)
    for payload in sent:
        got = by_jid[payload["jid"]]
        assert (got["jobtype"], got["args"], got["custom"]) == (payload["jobtype"], payload["args"], payload["custom"])
    _assert_not_reserved(faktory_url, list(by_jid))


def test_our_client_pushes_and_the_node_worker_runs(
    node_client: NodeClient, faktory_url: str, interop_queue: str
) -> None:
    jobs = [
        Job("PythonToNode", [n, f"payload-{n}", {"nested": [n, "ü"]}], queue=interop_queue, custom={"n": n}, retry=3)
        for n in range(12)
    ]
    with Client(faktory_url) as client:
        client.push(jobs[0])
        assert client.push_bulk(jobs[1:6]) == {}
        assert client.push_many(jobs[6:]) == {}
    events = node_client.run(
        WORK_SCRIPT, url=faktory_url, env={"INTEROP_QUEUE": interop_queue, "INTEROP_COUNT": str(len(jobs))}, timeout=30
    )
    seen = {event["jid"]: event for event in _events(events, "job")}
    assert set(seen) == {job.jid for job in jobs}
    for job in jobs:
        event = seen[job.jid]
        assert (event["args"], event["custom"], event["retry"]) == (job.args, job.custom, 3)
    _assert_not_reserved(faktory_url, list(seen))
