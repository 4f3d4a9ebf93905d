"""Reference test series 1-3, events, cancellation and cleanup, with real Redis and real Celery workers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from celery_deflow import Workflow, WorkflowCancelled, WorkflowResult, WorkflowTimeout

from . import handlers
from .conftest import Env

pytestmark = pytest.mark.usefixtures("worker")

WAIT = 30


class Collector:
    """Collects events delivered to callbacks (on the event thread)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)

    def finish(self, item: Any) -> None:
        self.add(item)
        self.done.set()


def settle(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# -- series 1: creation, same-name workflows, replace ------------------------------------------------------


def test_create_workflow_status_persisted_before_done(deflow_env: Env) -> None:
    wf = Workflow.create("test-simple").add_step(handlers.Echo, tasks=[1, 2, 3, 4, 5, 6])
    seen: dict[str, Any] = {}
    arrived = threading.Event()

    def on_done(result: WorkflowResult) -> None:
        seen["stored"] = deflow_env.client.hget(f"deflow:wf:{{{wf.id}}}", "status")
        seen["result"] = result
        arrived.set()

    wf.on("done", on_done)
    wf.run()
    assert arrived.wait(WAIT)
    assert seen["stored"] == b"done"
    result = seen["result"]
    assert result.id == wf.id
    assert result.name == "test-simple"
    assert result.status == "done"
    assert result.options == {"if_exist": "create", "clean_on_done": True}
    assert [t.result for t in result.steps[0].tasks] == [1, 2, 3, 4, 5, 6]
    assert wf.status == "done"
    assert Workflow.get(wf.id) is not None


def test_two_workflows_with_the_same_name(deflow_env: Env) -> None:
    first = Workflow.create("test-simple", clean_on_done=False).add_step(handlers.Echo)
    second = Workflow.create("test-simple", clean_on_done=False).add_step(handlers.Echo)
    first.run()
    second.run()
    for wf in (first, second):
        result = wf.wait(WAIT)
        assert result.steps[0].task_count == 0
        assert result.steps[0].tasks == []
    assert first.id != second.id
    assert {wf.id for wf in Workflow.get_by_name("test-simple")} == {first.id, second.id}


def test_replace_workflow(deflow_env: Env) -> None:
    first = Workflow.create("test-replace", if_exist="replace", clean_on_done=False)
    first.add_step(handlers.Echo, tasks=[1]).run()
    assert first.wait(WAIT).id == first.id
    second = Workflow.create("test-replace", if_exist="replace", clean_on_done=False)
    second.add_step(handlers.Echo, tasks=[2]).run()
    assert second.wait(WAIT).id == second.id
    assert Workflow.get(first.id) is None
    assert [wf.id for wf in Workflow.get_by_name("test-replace")] == [second.id]
    assert not [k for k in deflow_env.redis_keys() if first.id in k]


def test_replace_cancels_a_running_workflow(deflow_env: Env) -> None:
    first = Workflow.create("test-replace-running", if_exist="replace").add_step(handlers.Sleep, tasks=[0.2] * 20)
    errors = Collector()
    first.on("error", errors.add)
    first.run()
    second = Workflow.create("test-replace-running", if_exist="replace").add_step(handlers.Echo, tasks=[2])
    second.run()
    assert [t.result for t in second.wait(WAIT).steps[0].tasks] == [2]
    settle(lambda: errors.items)
    assert isinstance(errors.items[0], WorkflowCancelled)
    assert Workflow.get(first.id) is None


def test_workflow_without_steps_is_done_at_once(deflow_env: Env) -> None:
    wf = Workflow.create("nothing").run()
    result = wf.wait(WAIT)
    assert result.status == "done"
    assert result.steps == []


# -- series 2 and 3: timeouts and retries -----------------------------------------------------------------


def test_timeout_and_retry(deflow_env: Env) -> None:
    wf = Workflow.create("timeouts", task_timeout=0.15, task_max_fail_count=3)
    wf.add_step(handlers.Sleep, tasks=[0, 0.03, 0.4, 0.5]).run()
    tasks = wf.wait(WAIT).steps[0].tasks
    assert [t.data for t in tasks] == [0, 0.03, 0.4, 0.5]
    assert [(t.result, t.failed_count, t.error) for t in tasks[:2]] == [(0, 0, None), (0.03, 0, None)]
    for task in tasks[2:]:
        assert task.failed_count == 3
        assert task.result is None
        assert "timeout" in (task.error or "")


def test_async_handler_timeout(deflow_env: Env) -> None:
    wf = Workflow.create("async-timeouts", task_timeout=0.1, task_max_fail_count=2)
    wf.add_step(handlers.AsyncSleep, tasks=[0.01, 1.0]).run()
    ok, slow = wf.wait(WAIT).steps[0].tasks
    assert (ok.result, ok.failed_count) == (0.01, 0)
    assert slow.failed_count == 2
    assert "timeout" in (slow.error or "")


def test_retry_to_success_keeps_failed_count_and_clears_error(deflow_env: Env) -> None:
    wf = Workflow.create("retry-success")
    wf.add_step(
        handlers.Stuck,
        tasks=[10, 1, 20, 30, 40],
        options={"task_timeout": 0.1, "task_concurrency": 2, "task_max_fail_count": 3},
    )
    attempts = Collector()
    wf.on("next_task", attempts.add)
    wf.run()
    tasks = wf.wait(WAIT).steps[0].tasks
    retried = [t for t in tasks if t.failed_count > 0]
    assert [(t.data, t.failed_count, t.result, t.error) for t in retried] == [(1, 2, 1, None)]
    assert sorted(t.result for t in tasks if t.failed_count == 0) == [10, 20, 30, 40]
    settle(lambda: len(attempts.items) >= 7)
    time.sleep(0.1)
    assert len(attempts.items) == 7
    assert sorted(e["attempt"] for e in attempts.items if e["data"] == 1) == [1, 2, 3]
    assert set(attempts.items[0]) == {"id", "workflow_id", "data", "step_key", "attempt"}


@pytest.mark.parametrize("register_options", [{"check_process_queue_interval": 0}])
def test_final_failure_is_recorded(deflow_env: Env) -> None:
    assert not deflow_env.deflow.scanner.running
    wf = Workflow.create("save-failed").add_step(handlers.FailOne, tasks=[10, 1]).run()
    ok, failed = wf.wait(WAIT).steps[0].tasks
    assert (ok.data, ok.result, ok.failed_count, ok.error) == (10, 10, 0, None)
    assert (failed.data, failed.result, failed.failed_count, failed.error) == (1, None, 1, "failed")


def test_retry_delay_is_a_real_delay(deflow_env: Env) -> None:
    wf = Workflow.create("retry-delay", task_max_fail_count=2, task_fail_retry_delay=0.5)
    wf.add_step(handlers.FailOne, tasks=[1]).run()
    attempts = Collector()
    wf.on("next_task", lambda e: attempts.add(time.monotonic()))
    started = time.monotonic()
    (task,) = wf.wait(WAIT).steps[0].tasks
    assert task.failed_count == 2
    assert time.monotonic() - started >= 0.5


# -- events, progress, cancel, wait ----------------------------------------------------------------------


def test_events_reach_another_handle(deflow_env: Env) -> None:
    wf = Workflow.create("events").add_step(handlers.Sleep, tasks=[0.3, 0.01])
    wf.run()
    other = Workflow.get(wf.id)
    assert other is not None
    done = Collector()
    other.on("done", done.finish)
    assert done.done.wait(WAIT)
    assert done.items[0].id == wf.id
    late = Collector()
    other.on("done", late.finish)  # registered after done: delivered at once, once
    assert late.done.wait(5)
    assert len(late.items) == 1


def test_workflow_progress(deflow_env: Env) -> None:
    wf = Workflow.create("progress").add_step(handlers.Echo, tasks=[1, 2, 3]).add_step(handlers.Echo, tasks=[4])
    wf.run().wait(WAIT)
    progress = wf.progress()
    assert (progress.done, progress.total, progress.percent) == (4, 4, "100.00% - 4/4")


def test_cancel(deflow_env: Env) -> None:
    wf = Workflow.create("cancel").add_step(handlers.Sleep, tasks=[0.1] * 30)
    events = Collector()
    errors = Collector()
    done = Collector()
    wf.on("next_task", events.add)
    wf.on("error", errors.add)
    wf.on("done", done.finish)
    wf.run()
    settle(lambda: events.items)
    wf.cancel()
    assert wf.status == "cancelled"
    settle(lambda: errors.items)
    assert isinstance(errors.items[0], WorkflowCancelled)
    with pytest.raises(WorkflowCancelled):
        wf.wait(5)
    time.sleep(0.5)
    seen = len(events.items)
    time.sleep(0.5)
    assert len(events.items) == seen < 30
    assert not done.done.is_set()


def test_wait_timeout(deflow_env: Env) -> None:
    wf = Workflow.create("slow").add_step(handlers.Sleep, tasks=[1.0]).run()
    with pytest.raises(TimeoutError):
        wf.wait(0.2)
    with pytest.raises(WorkflowTimeout):
        wf.wait(0.1)
    assert wf.wait(WAIT).status == "done"


def test_clean_on_done_leaves_only_expiring_result_keys(deflow_env: Env) -> None:
    wf = Workflow.create("clean").add_step(handlers.Trace, tasks=["pre"]).add_step(handlers.Echo, tasks=[1, 2])
    wf.run().wait(WAIT)
    keys = [k for k in deflow_env.redis_keys() if wf.id in k]
    assert keys
    for key in keys:
        assert deflow_env.client.pttl(key) > 0, key
        assert not key.endswith((":plan", ":st", ":dedup", ":slots")), key
    assert [t.result for t in wf.results().steps[1].tasks] == [1, 2]


def test_no_clean_keeps_working_state_with_ttl(deflow_env: Env) -> None:
    wf = Workflow.create("no-clean", clean_on_done=False).add_step(handlers.Echo, tasks=[1, 2])
    wf.run().wait(WAIT)
    keys = [k for k in deflow_env.redis_keys() if wf.id in k]
    assert any(k.endswith(":st") for k in keys)
    assert all(deflow_env.client.pttl(k) > 0 for k in keys)


def test_results_are_in_insertion_order(deflow_env: Env) -> None:
    data = [0.2, 0.0, 0.1, 0.05, 0.0]
    wf = Workflow.create("order", task_concurrency=4).add_step(handlers.Sleep, tasks=data)
    assert [t.data for t in wf.run().wait(WAIT).steps[0].tasks] == data
