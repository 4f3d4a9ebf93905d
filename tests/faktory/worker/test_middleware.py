"""MiddlewareChain: pure tests of its editing and order, then live tests through a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from celery_faktory import Client
from celery_faktory.worker import JobContext, MiddlewareChain, Registry
from tests.faktory.wire import wait_until
from tests.faktory.worker.conftest import WorkerFactory
from tests.faktory.worker.support import push


def recorder(log: list[str], name: str) -> Callable[[JobContext, Callable[[], Any]], Any]:
    def middleware(ctx: JobContext, next: Callable[[], Any]) -> Any:  # noqa: A002
        log.append(f"before {name}")
        result = next()
        log.append(f"after {name}")
        return result

    return middleware


def ctx() -> JobContext:
    return JobContext.from_payload({"jid": "jid-00000001", "jobtype": "x", "args": [1]})


def test_onion_order_and_result() -> None:
    log: list[str] = []
    chain = MiddlewareChain([recorder(log, "1"), recorder(log, "2")])

    def final() -> str:
        log.append("run")
        return "result"

    assert chain.run(ctx(), final) == "result"
    assert log == ["before 1", "before 2", "run", "after 2", "after 1"]


def test_append_insert_remove() -> None:
    log: list[str] = []
    one, two, three = recorder(log, "1"), recorder(log, "2"), recorder(log, "3")
    chain = MiddlewareChain()
    chain.append(two)
    chain.insert(0, one)
    chain.append(three)
    assert list(chain) == [one, two, three]
    chain.remove(two)
    assert list(chain) == [one, three]
    assert len(chain) == 2
    chain.run(ctx(), lambda: log.append("run"))
    assert log == ["before 1", "before 3", "run", "after 3", "after 1"]
    with pytest.raises(ValueError, match="not in list"):
        chain.remove(two)


def test_a_middleware_can_skip_the_job_or_replace_its_result() -> None:
    ran: list[bool] = []
    chain = MiddlewareChain([lambda ctx, call_next: "replaced"])
    assert chain.run(ctx(), lambda: ran.append(True)) == "replaced"
    assert ran == []


def test_live_onion_order_around_the_job(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    log: list[str] = []

    @registry.register
    def job() -> None:
        log.append("run")

    worker = make_worker(middleware=[recorder(log, "1"), recorder(log, "2")]).start()
    push(client, queue, "job")
    wait_until(lambda: worker.stats().acked == 1)
    assert log == ["before 1", "before 2", "run", "after 2", "after 1"]


def test_live_middleware_rewrites_args_and_attaches_extra(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    seen: list[tuple[Any, ...]] = []

    def double_args(ctx: JobContext, next: Callable[[], Any]) -> Any:  # noqa: A002
        ctx.args = [arg * 2 for arg in ctx.args]
        ctx.extra["tenant"] = ctx.custom.get("tenant")
        return next()

    @registry.register
    def add(a: int, b: int, *, job: JobContext) -> None:
        seen.append((a, b, job.extra["tenant"]))

    worker = make_worker()
    worker.middleware.append(double_args)  # the chain can be edited after construction
    worker.start()
    push(client, queue, "add", 1, 20, custom={"tenant": "acme"})
    wait_until(lambda: worker.stats().acked == 1)
    assert seen == [(2, 40, "acme")]


def test_live_middleware_that_raises_fails_the_job(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    ran: list[bool] = []

    def refuse(ctx: JobContext, next: Callable[[], Any]) -> Any:  # noqa: A002
        raise PermissionError("not today")

    registry.add("job", lambda: ran.append(True))
    worker = make_worker(middleware=[refuse]).start()
    push(client, queue, "job", retry=0)
    wait_until(lambda: worker.stats().failed == 1)
    assert ran == []
