"""Celery on ``faktory://`` and the reference Node client (npm ``faktory-worker`` 4.x), both ways.

* Node pushes jobs whose jobtype is a Celery task name, with ``args`` and ``custom.kwargs``; an embedded Celery
  worker runs them as tasks whose id is the jid, and the Redis result backend holds their results.
* Celery publishes tasks named after a jobtype a Node worker registers; the Node worker receives the jobtype,
  the positional arguments as ``args`` and the keyword arguments as ``custom.kwargs``.

With ``queue_name_prefix`` ``""`` and a queue name made of letters, digits and ``-``, the Faktory queue has the
kombu queue's name. The tests run against our server or a real Faktory (``FAKTORY_URL``); they skip when
``node`` or ``npm`` is missing, like the other interop tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping for start_worker)
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.result import AsyncResult

from celery_faktory.client import Client
from tests.faktory.brokers import broker_url
from tests.faktory.interop import conftest as interop
from tests.faktory.interop.conftest import NodeClient
from tests.faktory.interop.test_node_client import _assert_not_reserved, _events
from tests.services import RedisService

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")  # Celery + redis-py 8

RESULT_TIMEOUT = 20.0

# The Node fixtures of the interop tests (npm install once per session, scripts, a unique queue removed after).
node_install_dir = interop.node_install_dir
node_client = interop.node_client
interop_queue = interop.interop_queue

NODE_PUSHES_CELERY_TASKS = """
const queue = env("INTEROP_QUEUE");
const client = await faktory.connect();

const described = client.job("interop.describe", 1, "two", { three: [3, 3.5] }, null, true);
described.queue = queue;
described.custom = { kwargs: { name: "Zoë", flag: false, nested: { list: [1, 2] } }, tenant: "acme" };
await described.push();

const positional = client.job("interop.add", 20, 22);
positional.queue = queue;
await positional.push();

const bulk = [0, 1, 2].map((i) => {
  const job = client.job("interop.add", i);
  job.queue = queue;
  job.custom = { kwargs: { y: 100 } };
  return job;
});
const rejected = await client.pushBulk(bulk);
emit({ event: "pushed", described: described.jid, positional: positional.jid, bulk: bulk.map((job) => job.jid),
       rejected });
await client.close();
"""

NODE_WORKS_CELERY_TASKS = """
const queue = env("INTEROP_QUEUE");
const expected = Number(env("INTEROP_COUNT"));
let seen = 0;
let allSeen;
const done = new Promise((resolve) => { allSeen = resolve; });

faktory.register("NodeJob", (...args) => async ({ job }) => {
  emit({ event: "job", jid: job.jid, jobtype: job.jobtype, queue: job.queue, args, custom: job.custom ?? null,
         retry: job.retry, reserve_for: job.reserve_for ?? null });
  seen += 1;
  if (seen === expected) allSeen();
});

const worker = await faktory.work({ queues: [queue], concurrency: 2 });
worker.on("fail", ({ job, error }) => emit({ event: "fail", jid: job.jid, message: error.message }));
emit({ event: "working" });
await done;
await worker.stop();
emit({ event: "stopped" });
"""


@pytest.fixture
def app(faktory_url: str, redis_server: RedisService, redis_url: str, interop_queue: str) -> Iterator[Celery]:
    os.environ.pop("TEST_BROKER", None)
    application = Celery("faktory_node", broker=broker_url(faktory_url), backend=redis_url, set_as_current=False)
    application.conf.update(
        broker_transport_options={"queue_name_prefix": ""},
        broker_connection_retry_on_startup=True,
        result_expires=600,
        worker_hijack_root_logger=False,
        task_default_queue=interop_queue,
    )

    @application.task(name="interop.describe", bind=True, shared=False)
    def describe(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"id": self.request.id, "args": list(args), "kwargs": kwargs, "retries": self.request.retries}

    @application.task(name="interop.add", shared=False)
    def add(x: int, y: int = 0) -> int:
        return x + y

    yield application
    consumer = getattr(application.backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
        consumer.subscribed_to.clear()  # results a failure keeps alive must not reconnect at exit
    application.close()


def test_node_pushes_and_celery_runs_the_tasks(
    node_client: NodeClient,
    faktory_url: str,
    interop_queue: str,
    app: Celery,
) -> None:
    events = node_client.run(NODE_PUSHES_CELERY_TASKS, url=faktory_url, env={"INTEROP_QUEUE": interop_queue})
    (pushed,) = _events(events, "pushed")
    assert pushed["rejected"] == {}
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=True, shutdown_timeout=30):
        described = AsyncResult(pushed["described"], app=app).get(timeout=RESULT_TIMEOUT)
        positional = AsyncResult(pushed["positional"], app=app).get(timeout=RESULT_TIMEOUT)
        bulk = [AsyncResult(jid, app=app).get(timeout=RESULT_TIMEOUT) for jid in pushed["bulk"]]
    # The jid is the task id; args are the positional arguments and custom.kwargs the keyword arguments.
    assert described == {
        "id": pushed["described"],
        "args": [1, "two", {"three": [3, 3.5]}, None, True],
        "kwargs": {"name": "Zoë", "flag": False, "nested": {"list": [1, 2]}},
        "retries": 0,
    }
    assert positional == 42
    assert bulk == [100, 101, 102]
    assert AsyncResult(pushed["described"], app=app).state == "SUCCESS"
    jids = [pushed["described"], pushed["positional"], *pushed["bulk"]]
    _assert_not_reserved(faktory_url, jids)  # every job was ACKed
    with Client(faktory_url) as client:
        assert client.queue_sizes().get(interop_queue, 0) == 0


def test_celery_publishes_and_node_runs_the_jobs(
    node_client: NodeClient,
    faktory_url: str,
    interop_queue: str,
    app: Celery,
) -> None:
    sent = [
        app.send_task("NodeJob", args=[1, "two", {"x": [1, 2.5]}], kwargs={"k": "v", "n": 3}, queue=interop_queue),
        app.signature("NodeJob", args=("sig", None), kwargs={"flag": True}).apply_async(queue=interop_queue),
        app.send_task("NodeJob", queue=interop_queue),
    ]
    expected = {
        sent[0].id: ([1, "two", {"x": [1, 2.5]}], {"k": "v", "n": 3}),
        sent[1].id: (["sig", None], {"flag": True}),
        sent[2].id: ([], {}),
    }
    events = node_client.run(
        NODE_WORKS_CELERY_TASKS,
        url=faktory_url,
        env={"INTEROP_QUEUE": interop_queue, "INTEROP_COUNT": str(len(sent))},
        timeout=30,
    )
    assert not _events(events, "fail")
    jobs = _events(events, "job")
    assert len(jobs) == len(sent)
    by_task = {job["custom"]["kombu"]["headers"]["id"]: job for job in jobs}
    assert set(by_task) == set(expected)
    for task_id, (args, kwargs) in expected.items():
        job = by_task[task_id]
        assert job["jobtype"] == "NodeJob"
        assert job["queue"] == interop_queue
        assert job["args"] == args
        assert job["custom"].get("kwargs", {}) == kwargs
        assert job["custom"]["kq"] == interop_queue
        assert job["retry"] == 25
        assert job["reserve_for"] == 1800
    _assert_not_reserved(faktory_url, [job["jid"] for job in jobs])
    with Client(faktory_url) as client:
        assert client.queue_sizes().get(interop_queue, 0) == 0
