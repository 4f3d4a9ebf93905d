"""Step handlers used by the DeFlow scenario tests (importable by every worker process)."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import defaultdict
from typing import Any, ClassVar

from celery import current_task

from celery_deflow import Step, StepHandler, Task

#: What hooks saw, by test key; only meaningful when the workers run in the test process.
SEEN: dict[str, list[Any]] = defaultdict(list)
_LOCK = threading.Lock()


def note(key: str, value: Any) -> None:
    with _LOCK:
        SEEN[key].append(value)


def node() -> str:
    """The Celery node (worker instance) running the current task."""
    request = current_task.request if current_task else None
    return str(getattr(request, "hostname", None) or os.environ.get("NAME", "?"))


class Echo(StepHandler):
    def handler(self, task: Task, step: Step) -> Any:
        return task.data


class Square(StepHandler):
    def handler(self, task: Task, step: Step) -> Any:
        return task.data * task.data


class Empty(StepHandler):
    """No hooks at all: a step without tasks of its own."""


class Sleep(StepHandler):
    """Sleeps ``task.data`` seconds, then returns it."""

    def handler(self, task: Task, step: Step) -> Any:
        time.sleep(task.data)
        return task.data


class AsyncSleep(StepHandler):
    async def handler(self, task: Task, step: Step) -> Any:
        await asyncio.sleep(task.data)
        return task.data


class Stuck(StepHandler):
    """Series 3: task 1 hangs while failed_count <= 1; others return their data after data/1000 s."""

    def handler(self, task: Task, step: Step) -> Any:
        if task.data == 1 and task.failed_count <= 1:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(task.data / 1000)
        return task.data


class FailOne(StepHandler):
    def handler(self, task: Task, step: Step) -> Any:
        if task.data == 1:
            raise Exception("failed")
        return task.data


class FailOnce(StepHandler):
    """Task 1 fails its first attempt."""

    def handler(self, task: Task, step: Step) -> Any:
        if task.data == 1 and task.failed_count == 0:
            raise Exception("first attempt fails")
        return task.data


class WhoAmI(StepHandler):
    """Series 4: which node ran which value."""

    def handler(self, task: Task, step: Step) -> Any:
        time.sleep(0.05)
        return {"name": node(), "value": task.data}


class Seeder(StepHandler):
    """Task ``"seed"`` adds two tasks to the running step; the others return their data."""

    def handler(self, task: Task, step: Step) -> Any:
        if task.data == "seed":
            step.add_tasks(["x", "y"])
        return task.data


class Chain(StepHandler):
    """Series 6: adds the next link while value < 100."""

    def handler(self, task: Task, step: Step) -> Any:
        value = task.data["value"]
        if value < 100:
            step.add_after(Chain, tasks=[{"value": value + 1}])
        return value


# -- series 7 / examples/ordered -----------------------------------------------------------------------------


class Value(StepHandler):
    def handler(self, task: Task, step: Step) -> Any:
        return task.data["value"]


class Step3(StepHandler):
    def before_all(self, step: Step) -> None:
        step.add_after(Value, tasks=[{"value": "step3Before"}])

    def handler(self, task: Task, step: Step) -> Any:
        return task.data["value"]

    def after_all(self, step: Step) -> None:
        step.add_after(Step3After, tasks=[{"value": "step3After"}])


class Step3After(StepHandler):
    def handler(self, task: Task, step: Step) -> Any:
        step.add_after(Value, tasks=[{"value": "step3AfterAfter"}])
        return task.data["value"]


class Step6(StepHandler):
    def handler(self, task: Task, step: Step) -> Any:
        step.add_after(Value, tasks=[{"value": "step6After"}])
        return task.data["value"]


# -- the phase probe ------------------------------------------------------------------------------------------


class Leaf(StepHandler):
    def handler(self, task: Task, step: Step) -> Any:
        return task.data


class Parent(StepHandler):
    def before_all(self, step: Step) -> None:
        step.add_tasks(["p1", "p2"])
        step.add_after(Leaf, tasks=["fromBeforeAll-A"])
        step.add_after(Leaf, tasks=["fromBeforeAll-B"])

    def handler(self, task: Task, step: Step) -> Any:
        time.sleep(random.uniform(0, 0.02))
        step.add_after(Leaf, tasks=[f"fromHandler-{task.data}"])
        return task.data

    def after_all(self, step: Step) -> None:
        step.add_after(Leaf, tasks=["fromAfterAll-A"])
        step.add_after(Leaf, tasks=["fromAfterAll-B"])


class BadBefore(StepHandler):
    def before_all(self, step: Step) -> None:
        raise ValueError("before_all exploded")

    def handler(self, task: Task, step: Step) -> Any:
        return task.data


# -- concurrent additions -------------------------------------------------------------------------------------


class Spawner(StepHandler):
    """Each task adds two children, after a random delay, so tasks finish in any order."""

    options: ClassVar[dict[str, Any]] = {"task_concurrency": 4}

    def handler(self, task: Task, step: Step) -> Any:
        time.sleep(random.uniform(0, 0.03))
        first = step.add_after(Leaf, tasks=[f"{task.data}-a"])
        step.add_after(Leaf, tasks=[f"{task.data}-b"])
        return first.index


# -- hook contract --------------------------------------------------------------------------------------------


class Trace(StepHandler):
    """The observed hook trace of the reference (tasks ["pre"], before_all adds ok1, fail, ok2)."""

    options: ClassVar[dict[str, Any]] = {"task_max_fail_count": 3}

    def before_all(self, step: Step) -> None:
        note("trace", ("before_all", step.task_count))
        step.add_tasks(["ok1", "fail", "ok2"])
        note("trace", ("before_all", step.task_count))

    def handler(self, task: Task, step: Step) -> Any:
        note("attempts", (task.data, task.failed_count, task.error))
        if task.data == "fail":
            raise RuntimeError("boom")
        return task.data.upper()

    def on_handler_error(self, task: Task, step: Step, error: BaseException) -> None:
        note("errors", (task.data, task.failed_count, task.error, str(error)))

    def after_each(self, task: Task, step: Step) -> None:
        note("progress", step.get_progress().percent)
        note("after_each", (task.data, task.failed_count, task.result, task.error))

    def after_all(self, step: Step) -> None:
        note("after_all", (step.get_progress().percent, [t.data for t in step.get_results()]))


class Hooky(StepHandler):
    """Hooks that raise: the workflow goes on."""

    def handler(self, task: Task, step: Step) -> Any:
        if task.data == "bad":
            raise ValueError("bad task")
        return task.data

    def on_handler_error(self, task: Task, step: Step, error: BaseException) -> None:
        raise KeyError("on_handler_error exploded")

    def after_each(self, task: Task, step: Step) -> None:
        raise RuntimeError("after_each exploded")

    def after_all(self, step: Step) -> None:
        raise RuntimeError("after_all exploded")


class EmptyWithHooks(StepHandler):
    def before_all(self, step: Step) -> None:
        note("empty", ("before_all", step.get_progress().percent, step.task_count))

    def handler(self, task: Task, step: Step) -> Any:
        return task.data

    def after_all(self, step: Step) -> None:
        note("empty", ("after_all", step.get_progress().percent, step.get_results()))


class Widen(StepHandler):
    """Tasks add tasks to their own step while it runs (task.add_tasks)."""

    def handler(self, task: Task, step: Step) -> Any:
        if task.data < 3:
            task.add_tasks([task.data + 10])
        return task.data


class Optioned(StepHandler):
    options: ClassVar[dict[str, Any]] = {"task_timeout": 5.0, "task_max_fail_count": 4}

    def handler(self, task: Task, step: Step) -> Any:
        return step.options


class Nested(StepHandler):
    """Indexes: each level adds two children until depth 2."""

    def handler(self, task: Task, step: Step) -> Any:
        if task.data < 2:
            step.add_after(Nested, tasks=[task.data + 1])
            step.add_after(Nested, tasks=[task.data + 1])
        return step.index


class Tamper(StepHandler):
    """before_all rewrites the stored handler path of the next step (a malicious writer of Redis)."""

    def before_all(self, step: Step) -> None:
        import redis

        client = redis.Redis.from_url(step.data["url"])
        try:
            client.hset(step.data["key"], "handler", step.data["path"])
        finally:
            client.close()

    def handler(self, task: Task, step: Step) -> Any:
        return task.data


class Sleepy(StepHandler):
    """A task that may be lost with its worker: sleeps ``task.data`` seconds on the first attempt only."""

    def handler(self, task: Task, step: Step) -> Any:
        note("sleepy", (task.data, task.failed_count, node(), os.getpid()))
        if task.failed_count == 0:
            time.sleep(task.data)
        return {"value": task.data, "pid": os.getpid()}
