"""Handlers are loaded only from allowed modules; a malicious path stored in Redis fails its step clearly."""

from __future__ import annotations

import sys
import threading

import pytest

from celery_deflow import HandlerNotAllowed, Workflow
from celery_deflow.handler import HandlerLoader, StepHandler, describe, handler_path, resolve

from . import handlers
from .conftest import Env, in_thread_worker


def test_loader_accepts_step_handlers_of_imported_modules() -> None:
    loader = HandlerLoader([])
    handler = loader.load("tests.deflow.handlers:Echo")
    assert isinstance(handler, handlers.Echo)
    assert loader.load("tests.deflow.handlers:Echo") is handler


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("tests.deflow.evil:Evil", "not imported and not among the allowed"),
        ("os:system", "does not name a StepHandler subclass"),
        ("subprocess:Popen", "does not name a StepHandler subclass"),
        ("celery_deflow:StepHandler", "does not name a StepHandler subclass"),
        ("tests.deflow.handlers:__class__", "cannot be loaded"),
        ("os; rm -rf /:x", "malformed"),
        ("tests.deflow.handlers:Missing", "cannot be loaded"),
    ],
)
def test_loader_refuses(path: str, reason: str) -> None:
    with pytest.raises(HandlerNotAllowed, match=reason):
        HandlerLoader(["tests.deflow.handlers"]).load(path)
    assert "tests.deflow.evil" not in sys.modules


def test_allowed_modules_include_submodules() -> None:
    loader = HandlerLoader(["some.package"])
    assert loader.allowed("some.package")
    assert loader.allowed("some.package.steps")
    assert not loader.allowed("some.packagex")


def test_describe_and_resolve() -> None:
    info = describe(handlers.Step3)
    assert (info.path, info.name, info.has_before, info.has_after) == (
        "tests.deflow.handlers:Step3",
        "Step3",
        True,
        True,
    )
    assert not describe(handlers.Echo).has_before
    assert resolve("tests.deflow.handlers:Echo") is handlers.Echo
    with pytest.raises(ValueError, match="invalid handler path"):
        resolve("no-colon")

    def factory() -> type[StepHandler]:
        class Local(StepHandler):
            pass

        return Local

    with pytest.raises(ValueError, match="inside a function"):
        handler_path(factory())


@pytest.mark.parametrize("path", ["tests.deflow.evil:Evil", "subprocess:Popen"])
def test_malicious_path_in_redis_fails_the_step(deflow_env: Env, path: str) -> None:
    wf = Workflow.create("tampered")
    target = f"deflow:wf:{{{wf.id}}}:s:2"
    wf.add_step(handlers.Tamper, data={"url": deflow_env.redis_url, "key": target, "path": path}, tasks=[0])
    wf.add_step(handlers.Echo, tasks=[1, 2, 3], options={"task_max_fail_count": 3})
    wf.add_step(handlers.Echo, tasks=[4])
    errors: list[BaseException] = []
    wf.on("error", errors.append)
    with in_thread_worker(deflow_env.app, pool="solo", concurrency=1):
        result = wf.run().wait(30)
    tampered = result.steps[1]
    assert [t.data for t in tampered.tasks] == [1, 2, 3]
    for task in tampered.tasks:
        assert task.result is None
        assert task.failed_count == 1  # refused at once: no retries of a refused handler
        assert task.error is not None
        assert task.error.startswith("HandlerNotAllowed")
        assert path in task.error
    assert [t.result for t in result.steps[2].tasks] == [4]
    assert any(isinstance(e, HandlerNotAllowed) for e in errors)
    assert "tests.deflow.evil" not in sys.modules


def test_concurrent_first_loads_wait_for_the_import() -> None:
    """Threads loading a handler whose module another thread is still importing all get it."""
    loader = HandlerLoader(["tests.deflow.lazy_handlers"])
    outcomes: list[object] = []

    def load() -> None:
        try:
            outcomes.append(loader.load("tests.deflow.lazy_handlers:Slow"))
        except HandlerNotAllowed as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(outcome) for outcome in outcomes}) == 1
    assert type(outcomes[0]).__name__ == "Slow"
