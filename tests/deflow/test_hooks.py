"""The hook contract: order and arguments, progress as hooks see it, hook failures, empty steps, options."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_deflow import HookError, Workflow

from . import handlers
from .conftest import Env, in_thread_worker

WAIT = 30


@pytest.fixture
def solo(deflow_env: Env) -> Iterator[None]:
    """One node running one message at a time: the reference's single-process order."""
    handlers.SEEN.clear()
    with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
        yield
    handlers.SEEN.clear()


@pytest.mark.usefixtures("solo")
def test_observed_trace(deflow_env: Env) -> None:
    result = Workflow.create("trace").add_step(handlers.Trace, tasks=["pre"]).run().wait(WAIT)
    seen = handlers.SEEN
    assert seen["trace"] == [("before_all", 1), ("before_all", 4)]
    assert seen["attempts"] == [
        ("pre", 0, None),
        ("ok1", 0, None),
        ("fail", 0, None),
        ("ok2", 0, None),
        ("fail", 1, None),
        ("fail", 2, None),
    ]
    assert seen["progress"] == [
        "25.00% - 1/4",
        "50.00% - 2/4",
        "50.00% - 2/4",
        "75.00% - 3/4",
        "75.00% - 3/4",
        "100.00% - 4/4",
    ]
    assert seen["errors"] == [("fail", n, "boom", "boom") for n in (1, 2, 3)]
    assert seen["after_each"][2] == ("fail", 1, None, "boom")
    assert seen["after_each"][0] == ("pre", 0, "PRE", None)
    assert seen["after_all"] == [("100.00% - 4/4", ["pre", "ok1", "fail", "ok2"])]
    (step,) = result.steps
    assert step.task_count == 4
    assert [(t.data, t.result, t.failed_count, t.error) for t in step.tasks] == [
        ("pre", "PRE", 0, None),
        ("ok1", "OK1", 0, None),
        ("fail", None, 3, "boom"),
        ("ok2", "OK2", 0, None),
    ]


@pytest.mark.usefixtures("solo")
def test_hook_failures_never_stop_the_workflow(deflow_env: Env) -> None:
    wf = Workflow.create("hooky").add_step(handlers.Hooky, tasks=["ok", "bad"]).add_step(handlers.Echo, tasks=[1])
    errors: list[BaseException] = []
    wf.on("error", errors.append)
    result = wf.run().wait(WAIT)
    hooky, echo = result.steps
    assert [(t.data, t.result, t.error) for t in hooky.tasks] == [("ok", "ok", None), ("bad", None, "bad task")]
    assert [t.result for t in echo.tasks] == [1]
    hooks = sorted(error.split(" of step ")[0] for error in hooky.hook_errors)
    assert hooks == ["after_all", "after_each", "after_each", "on_handler_error"]
    assert "raised KeyError" in next(e for e in hooky.hook_errors if e.startswith("on_handler_error"))
    assert all(isinstance(e, HookError) for e in errors)


@pytest.mark.usefixtures("solo")
def test_steps_without_tasks(deflow_env: Env) -> None:
    wf = Workflow.create("empty").add_step(handlers.EmptyWithHooks).add_step(handlers.Empty, data={"x": 1})
    result = wf.run().wait(WAIT)
    assert handlers.SEEN["empty"] == [("before_all", "0% - 0/0", 0), ("after_all", "0% - 0/0", [])]
    assert [(s.name, s.task_count, s.tasks, s.data) for s in result.steps] == [
        ("EmptyWithHooks", 0, [], None),
        ("Empty", 0, [], {"x": 1}),
    ]


@pytest.mark.usefixtures("solo")
def test_option_precedence(deflow_env: Env) -> None:
    wf = Workflow.create("options", task_timeout=1.0, task_concurrency=3, task_fail_retry_delay=0.5)
    wf.add_step(handlers.Optioned, tasks=[1], options={"task_max_fail_count": 2})
    wf.add_step(handlers.Echo, tasks=[2])
    result = wf.run().wait(WAIT)
    optioned, echo = result.steps
    expected = {"task_timeout": 5.0, "task_concurrency": 3, "task_max_fail_count": 2, "task_fail_retry_delay": 0.5}
    assert optioned.options == expected
    assert optioned.tasks[0].result == expected
    assert echo.options == {
        "task_timeout": 1.0,
        "task_concurrency": 3,
        "task_max_fail_count": 1,
        "task_fail_retry_delay": 0.5,
    }
    assert wf.options == {
        "if_exist": "create",
        "clean_on_done": True,
        "task_timeout": 1.0,
        "task_concurrency": 3,
        "task_fail_retry_delay": 0.5,
    }


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown step option"):
        Workflow.create("x", task_timeot=1)
    with pytest.raises(ValueError, match="task_concurrency"):
        Workflow.create("x").add_step(handlers.Echo, options={"task_concurrency": 0})
    with pytest.raises(ValueError, match="if_exist"):
        Workflow.create("x", if_exist="merge")


def test_step_objects_outside_a_run(deflow_env: Env) -> None:
    from celery_deflow import StateError

    with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
        result = Workflow.create("plain").add_step(handlers.Echo, tasks=[1]).run().wait(WAIT)
    with pytest.raises(StateError):
        result.steps[0].tasks[0].add_tasks([2])
