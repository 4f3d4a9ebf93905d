"""Ordering: series 6 and 7, examples/ordered, the phase probe, concurrent additions and step indexes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celery_deflow import HookError, Workflow

from . import handlers
from .conftest import Env, in_thread_worker

WAIT = 60

SERIES_7 = [
    "step1",
    "step2",
    "step3Before",
    "step3",
    "step3After",
    "step3AfterAfter",
    "step4",
    "step5",
    "step6",
    "step6After",
    "step7",
    "step8",
    "step9",
    "step10",
    "step11",
    "step12",
]


def series_7(wf: Workflow, names: list[str]) -> Workflow:
    special = {"step3": handlers.Step3, "step6": handlers.Step6}
    for name in names:
        wf.add_step(special.get(name, handlers.Value), tasks=[{"value": name}])
    return wf


class Recorder:
    def __init__(self, wf: Workflow) -> None:
        self.values: list[Any] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        wf.on("next_task", self._task)
        wf.on("error", self.errors.append)

    def _task(self, event: dict[str, Any]) -> None:
        data = event["data"]
        with self._lock:
            self.values.append(data["value"] if isinstance(data, dict) else data)


@pytest.fixture(params=[1, 3], ids=["1-node", "3-nodes"])
def nodes(request: pytest.FixtureRequest, deflow_env: Env, worker_processes: Callable[..., Any]) -> Iterator[int]:
    """One embedded solo node (a phase's tasks start in insertion order), or three worker processes with two
    threads each (phases still strictly in order)."""
    if request.param == 1:
        with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
            yield 1
    else:
        worker_processes(request.param, pool="threads", concurrency=2)
        yield request.param


def run_and_record(wf: Workflow) -> tuple[Recorder, Any]:
    recorder = Recorder(wf)
    result = wf.run().wait(WAIT)
    return recorder, result


def test_series_7_order(deflow_env: Env, nodes: int) -> None:
    wf = series_7(Workflow.create("ordering"), [f"step{i}" for i in range(1, 13)])
    recorder, result = run_and_record(wf)
    assert recorder.values == SERIES_7
    # steps are listed where their tasks ran (execution order); a before_all addition precedes its adder
    assert [s.tasks[0].result for s in result.steps] == SERIES_7
    assert [s.index for s in result.steps][:6] == ["1", "2", "3.1", "3", "3.2", "3.2.1"]


def test_examples_ordered(deflow_env: Env, nodes: int) -> None:
    names = [f"step{i}" for i in range(1, 7)] * 3
    recorder, _ = run_and_record(series_7(Workflow.create("ordered"), names))
    once = [
        "step1",
        "step2",
        "step3Before",
        "step3",
        "step3After",
        "step3AfterAfter",
        "step4",
        "step5",
        "step6",
        "step6After",
    ]
    assert recorder.values == once * 3


def test_phase_probe(deflow_env: Env, nodes: int) -> None:
    wf = Workflow.create("probe")
    wf.add_step(handlers.Leaf, tasks=["first"]).add_step(handlers.Parent, tasks=["p0"])
    wf.add_step(handlers.BadBefore, tasks=["bb"]).add_step(handlers.Leaf, tasks=["last"])
    recorder, result = run_and_record(wf)
    expected = [
        "first",
        "fromBeforeAll-A",
        "fromBeforeAll-B",
        "p0",
        "p1",
        "p2",
        "fromHandler-p0",
        "fromHandler-p1",
        "fromHandler-p2",
        "fromAfterAll-A",
        "fromAfterAll-B",
        "bb",
        "last",
    ]
    if nodes > 1:  # the three tasks of one phase may start in any order on several nodes
        assert sorted(recorder.values[3:6]) == expected[3:6]
        recorder.values[3:6] = expected[3:6]
    assert recorder.values == expected
    bad = next(s for s in result.steps if s.name == "BadBefore")
    assert [t.result for t in bad.tasks] == ["bb"]
    assert len(bad.hook_errors) == 1
    assert "before_all exploded" in bad.hook_errors[0]
    assert any(isinstance(e, HookError) and "before_all exploded" in str(e) for e in recorder.errors)


def test_series_6_chain_of_100(deflow_env: Env) -> None:
    with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
        result = Workflow.create("chain").add_step(handlers.Chain, tasks=[{"value": 1}]).run().wait(WAIT)
    assert len(result.steps) == 100
    assert [s.tasks[0].data["value"] for s in result.steps] == list(range(1, 101))
    assert [s.tasks[0].result for s in result.steps] == list(range(1, 101))
    assert result.steps[2].index == "1.1.1"


def test_concurrent_additions_follow_task_order(deflow_env: Env, worker_processes: Callable[..., Any]) -> None:
    """Children added by tasks finishing in any order, on several nodes, run in task order, then call order."""
    count = 12
    worker_processes(3, pool="threads", concurrency=4)
    wf = Workflow.create("spawn").add_step(handlers.Spawner, tasks=list(range(count)))
    wf.add_step(handlers.Leaf, tasks=["after"])
    recorder, result = run_and_record(wf)
    expected = [*range(count)] + [f"{i}-{suffix}" for i in range(count) for suffix in "ab"] + ["after"]
    assert sorted(recorder.values[:count]) == list(range(count))
    assert recorder.values[count:] == expected[count:]
    children = [s for s in result.steps if s.parent_key is not None]
    assert len(children) == 2 * count
    assert len({s.index for s in children}) == 2 * count  # unique, no collision
    spawner = result.steps[0]
    assert all(t.result.startswith("1.") for t in spawner.tasks)


@pytest.mark.usefixtures("worker")
def test_nested_indexes(deflow_env: Env) -> None:
    wf = Workflow.create("nested").add_step(handlers.Echo, tasks=[0]).add_step(handlers.Nested, tasks=[0])
    result = wf.run().wait(WAIT)
    indexes = [s.index for s in result.steps]
    assert indexes == ["1", "2", "2.1", "2.1.1", "2.1.2", "2.2", "2.2.1", "2.2.2"]
    assert [s.tasks[0].result for s in result.steps[1:]] == indexes[1:]


@pytest.mark.usefixtures("worker")
def test_tasks_added_while_the_step_runs(deflow_env: Env) -> None:
    wf = Workflow.create("widen").add_step(handlers.Widen, tasks=[0, 1, 2, 3]).add_step(handlers.Echo, tasks=["x"])
    result = wf.run().wait(WAIT)
    widen = result.steps[0]
    assert widen.task_count == 7
    assert [t.data for t in widen.tasks][:4] == [0, 1, 2, 3]
    assert sorted(t.data for t in widen.tasks[4:]) == [10, 11, 12]
    assert [s.tasks[0].result for s in result.steps[1:]] == ["x"]
