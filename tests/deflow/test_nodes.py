"""Several worker processes: reference series 4 (distribution) and 5 (initiator crash), pools and timeouts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from celery_deflow import Workflow, WorkflowResult

from . import handlers
from .conftest import REPO, Env, in_thread_worker

WAIT = 60
Start = Callable[..., Any]
#: Celery's embedded worker reports the machine's hostname (it runs without the worker optimisations).
EMBEDDED = socket.gethostname()


def values_by_node(result: WorkflowResult) -> dict[str, list[int]]:
    by_node: dict[str, list[int]] = {}
    for step in result.steps:
        for task in step.tasks:
            by_node.setdefault(task.result["name"], []).append(task.result["value"])
    return by_node


def test_two_nodes_share_the_work(deflow_env: Env, worker_processes: Start) -> None:
    worker_processes(1)
    with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
        wf = Workflow.create("two-nodes").add_step("tests.deflow.handlers:WhoAmI", tasks=list(range(10, 101, 10)))
        by_node = values_by_node(wf.run().wait(WAIT))
    assert set(by_node) == {EMBEDDED, "p0@deflow"}
    values = [v for vs in by_node.values() for v in vs]
    assert sorted(values) == list(range(10, 101, 10))  # each value processed exactly once


def test_four_nodes_two_steps(deflow_env: Env, worker_processes: Start) -> None:
    worker_processes(3)
    with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
        wf = Workflow.create("four-nodes", clean_on_done=True)
        wf.add_step(handlers.WhoAmI, tasks=list(range(10, 101, 10))).add_step(
            handlers.WhoAmI, tasks=list(range(110, 201, 10))
        )
        result = wf.run().wait(WAIT)
    assert len(result.steps) == 2
    by_node = values_by_node(result)
    assert set(by_node) == {EMBEDDED, "p0@deflow", "p1@deflow", "p2@deflow"}
    assert Counter(v for vs in by_node.values() for v in vs) == Counter(range(10, 201, 10))


def test_ten_nodes(deflow_env: Env, worker_processes: Start) -> None:
    worker_processes(9)
    events: list[dict[str, Any]] = []
    with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
        wf = Workflow.create("ten-nodes").add_step(handlers.WhoAmI, tasks=list(range(10)))
        wf.add_step(handlers.WhoAmI, tasks=list(range(10)))
        wf.on("next_task", events.append)
        result = wf.run().wait(WAIT)
    assert len(result.steps) == 2
    assert len(events) == 20
    assert len({e["id"] for e in events}) == 20
    assert len(values_by_node(result)) >= 5


def test_done_events_of_concurrent_workflows(deflow_env: Env, worker_processes: Start) -> None:
    worker_processes(3)
    done: list[str] = []
    tasks: list[dict[str, Any]] = []
    all_done = threading.Event()

    def on_done(result: WorkflowResult) -> None:
        done.append(result.name)
        if len(done) == 3:
            all_done.set()

    workflows = [Workflow.create(f"event-{i}").add_step(handlers.WhoAmI, tasks=[1, 2, 3]) for i in (1, 2, 3)]
    for wf in workflows:
        wf.on("done", on_done).on("next_task", tasks.append)
    for wf in workflows:
        wf.run()
    assert all_done.wait(WAIT)
    for wf in workflows:
        wf.wait(WAIT)
    assert sorted(done) == ["event-1", "event-2", "event-3"]
    assert len(tasks) == 9


def test_long_messages_are_split_across_nodes(deflow_env: Env, worker_processes: Start) -> None:
    """One message holding the whole phase: its worker hands halves of it to the other nodes."""
    worker_processes(3, DEFLOW_TARGET_BATCHES="1", DEFLOW_SPLIT_AFTER="0.1")
    wf = Workflow.create("split").add_step(handlers.WhoAmI, tasks=list(range(30)))
    by_node = values_by_node(wf.run().wait(WAIT))
    assert set(by_node) == {"p0@deflow", "p1@deflow", "p2@deflow"}
    assert sorted(v for vs in by_node.values() for v in vs) == list(range(30))


@pytest.mark.parametrize(("pool", "concurrency"), [("prefork", 2), ("solo", 1), ("threads", 2)])
def test_timeouts_in_every_pool(deflow_env: Env, worker_processes: Start, pool: str, concurrency: int) -> None:
    worker_processes(1, pool=pool, concurrency=concurrency)
    wf = Workflow.create(f"timeouts-{pool}", task_timeout=0.3, task_max_fail_count=2)
    wf.add_step(handlers.Sleep, tasks=[0.0, 5.0]).add_step(handlers.Echo, tasks=["after"])
    result = wf.run().wait(WAIT)
    fast, slow = result.steps[0].tasks
    assert (fast.result, fast.failed_count, fast.error) == (0.0, 0, None)
    assert slow.result is None
    assert slow.failed_count == 2
    assert "timeout" in (slow.error or "")
    assert result.steps[1].tasks[0].result == "after"


def test_series_5_initiator_crash(deflow_env: Env, worker_processes: Start) -> None:
    worker_processes(2)
    child = subprocess.run(
        [sys.executable, "-m", "tests.deflow.initiator"],
        cwd=REPO,
        env={
            **os.environ,
            **deflow_env.broker_environ,
            "DEFLOW_REDIS_URL": deflow_env.redis_url,
            "PYTHONPATH": str(REPO),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 17, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[0])
    wf = Workflow.get(report["workflow_id"])
    assert wf is not None
    done = threading.Event()
    wf.on("done", lambda result: done.set())
    result = wf.wait(WAIT)
    assert done.wait(5)
    assert result.status == "done"
    (step,) = result.steps
    assert step.task_count == 150
    assert [t.result for t in step.tasks] == list(range(150))
