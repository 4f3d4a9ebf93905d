"""Crash safety: a worker node SIGKILLed mid-step, a prefork child killed, duplicate deliveries, a Redis
restart -- every task counted exactly once, and no silent hang."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from kombu.exceptions import OperationalError

from celery_deflow import Workflow, WorkflowNotFound

from . import handlers
from .conftest import Env, in_thread_worker

WAIT = 60
Start = Callable[..., Any]


class Attempts:
    def __init__(self, wf: Workflow) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        wf.on("next_task", self._add)

    def _add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"only {len(self.events)} attempts started"
            time.sleep(0.02)


def assert_counted_once(wf: Workflow, result: Any, total: int) -> None:
    step = result.steps[0]
    assert step.task_count == total
    assert len(step.tasks) == total
    assert len({t.id for t in step.tasks}) == total
    assert all(t.result is not None and t.error is None for t in step.tasks)
    assert wf.progress().done == wf.progress().total


def test_sigkill_of_a_worker_node_mid_step(deflow_env: Env, worker_processes: Start) -> None:
    victim, survivor = worker_processes(2)
    wf = Workflow.create("sigkill", task_max_fail_count=2)
    wf.add_step(handlers.Sleepy, tasks=[1.0] * 6).add_step(handlers.Echo, tasks=["after"])
    attempts = Attempts(wf)
    wf.run()
    attempts.wait_for(2)  # both nodes are inside an attempt
    time.sleep(0.2)
    victim_pid = victim.process.pid
    victim.kill()
    result = wf.wait(WAIT)
    assert_counted_once(wf, result, 6)
    tasks = result.steps[0].tasks
    lost = [t for t in tasks if t.failed_count]
    assert len(lost) == 1  # the attempt that died with its node; nothing else was lost
    assert lost[0].result["pid"] == survivor.process.pid != victim_pid
    step_key = result.steps[0].key
    per_task = Counter(e["id"] for e in attempts.events if e["step_key"] == step_key)
    assert per_task[lost[0].id] == 2
    assert sorted(per_task.values()) == [1, 1, 1, 1, 1, 2]
    assert result.steps[1].tasks[0].result == "after"


def test_prefork_child_killed_mid_attempt(deflow_env: Env, worker_processes: Start) -> None:
    (node,) = worker_processes(1, pool="prefork", concurrency=2)
    wf = Workflow.create("child-kill", task_max_fail_count=2, task_concurrency=2)
    wf.add_step(handlers.Sleepy, tasks=[1.0] * 4)
    attempts = Attempts(wf)
    wf.run()
    attempts.wait_for(2)
    time.sleep(0.2)
    children = psutil.Process(node.process.pid).children()
    assert children
    os.kill(children[0].pid, signal.SIGKILL)
    result = wf.wait(WAIT)
    assert_counted_once(wf, result, 4)
    assert sum(t.failed_count for t in result.steps[0].tasks) == 1
    assert "worker lost" not in str([t.error for t in result.steps[0].tasks])  # cleared by the later success


def test_duplicate_deliveries_count_once(deflow_env: Env) -> None:
    app = deflow_env.app
    with in_thread_worker(app, pool="threads", concurrency=4):
        wf = Workflow.create("dupes", task_concurrency=4)
        wf.add_step(handlers.Sleep, tasks=[0.05] * 20).add_step(handlers.Echo, tasks=[1])
        attempts = Attempts(wf)
        wf.run()
        attempts.wait_for(1)
        for position in range(20):  # the broker delivers every message of the phase again
            app.send_task("celery_deflow.run_range", args=(wf.id, 1, position, position + 1))
            app.send_task("celery_deflow.run_list", args=(wf.id, 1, [[position, 1], [position, 2]]))
        app.send_task("celery_deflow.close_phase", args=(wf.id, "1:t"))
        result = wf.wait(WAIT)
        for _ in range(3):  # and again after the workflow is done
            app.send_task("celery_deflow.run_range", args=(wf.id, 1, 0, 20))
            app.send_task("celery_deflow.close_phase", args=(wf.id, "2:t"))
        time.sleep(0.5)
    assert_counted_once(wf, result, 20)
    assert sorted(Counter(e["id"] for e in attempts.events).values()) == [1] * 21
    assert wf.results().to_dict() == result.to_dict()
    assert wf.progress().percent == "100.00% - 21/21"


def test_redis_restart_fails_clearly(deflow_env: Env, redis_server: Any) -> None:
    with in_thread_worker(deflow_env.app, pool="threads", concurrency=2):
        wf = Workflow.create("restart").add_step(handlers.Sleep, tasks=[0.3] * 20)
        attempts = Attempts(wf)
        wf.run()
        attempts.wait_for(1)
        redis_server.restart()
        started = time.monotonic()
        with pytest.raises(WorkflowNotFound, match="no longer stored"):
            wf.wait(30)
        assert time.monotonic() - started < 15


class RefuseOnce:
    """Fault injection: the broker refuses the first publish made through one dispatcher method."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, dispatcher: Any, name: str) -> None:
        self.refused = 0
        real = getattr(dispatcher, name)

        def publish(*args: Any) -> None:
            if not self.refused:
                self.refused += 1
                raise OperationalError(f"{name}: connection refused (injected)")
            real(*args)

        monkeypatch.setattr(dispatcher, name, publish)


def test_tasks_added_but_not_published_are_published_by_the_scan(
    deflow_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = RefuseOnce(monkeypatch, deflow_env.deflow.driver._dispatcher, "send_ranges")
    with in_thread_worker(deflow_env.app):
        wf = Workflow.create("added-unpublished").add_step(handlers.Seeder, tasks=["seed", "a"])
        result = wf.run().wait(WAIT)
    assert refusal.refused == 1
    (step,) = result.steps
    seed, a, x, y = step.tasks
    assert "injected" in (seed.error or "")  # the seed's attempt saw the publish fail ...
    assert (a.result, x.result, y.result) == ("a", "x", "y")  # ... but the tasks it added ran all the same
    assert wf.progress().percent == "100.00% - 4/4"


def test_retries_made_due_but_not_published_are_published_by_the_scan(
    deflow_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = RefuseOnce(monkeypatch, deflow_env.deflow.driver._dispatcher, "send_retries")
    with in_thread_worker(deflow_env.app):
        wf = Workflow.create("retry-unpublished", task_max_fail_count=2)
        result = wf.add_step(handlers.FailOnce, tasks=[1, 2]).run().wait(WAIT)
    assert refusal.refused == 1
    tasks = result.steps[0].tasks
    assert [(t.result, t.error) for t in tasks] == [(1, None), (2, None)]
    assert sorted(t.failed_count for t in tasks) == [0, 1]
