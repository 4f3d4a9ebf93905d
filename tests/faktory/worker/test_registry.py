"""Registry, register and Handler: pure tests, no server."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from celery_faktory.errors import FaktoryError
from celery_faktory.worker import JobContext, Registry, UnknownJobType, register, registry
from tests.faktory.wire import unique


def context(jobtype: str, *args: Any) -> JobContext:
    return JobContext.from_payload({"jid": "jid-00000001", "jobtype": jobtype, "args": list(args)})


def test_bare_decorator_registers_under_the_function_name() -> None:
    jobs = Registry()

    @jobs.register
    def send_email(address: str) -> str:
        return address

    assert jobs.jobtypes() == ["send_email"]
    assert "send_email" in jobs
    assert jobs.get("send_email").function is send_email
    assert send_email("x") == "x"  # returned unchanged


def test_decorator_with_a_name_and_with_empty_parentheses() -> None:
    jobs = Registry()

    @jobs.register("SendEmail")
    def send() -> None: ...

    @jobs.register()
    def resize() -> None: ...

    assert jobs.jobtypes() == ["SendEmail", "resize"]
    assert len(jobs) == 2


def test_add_registers_a_plain_callable() -> None:
    jobs = Registry()
    handler = jobs.add("Upper", str.upper)
    assert handler.jobtype == "Upper"
    assert handler(context("Upper", "abc")) == "ABC"


def test_keyword_only_job_parameter_is_detected_once() -> None:
    jobs = Registry()

    def wants(a: int, *, job: JobContext) -> tuple[int, str]:
        return a, job.jid

    def positional(job: Any) -> Any:
        return job

    def variadic(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    assert jobs.add("wants", wants).wants_job
    assert not jobs.add("positional", positional).wants_job
    assert not jobs.add("variadic", variadic).wants_job
    assert jobs.get("wants")(context("wants", 7)) == (7, "jid-00000001")
    assert jobs.get("positional")(context("positional", "arg")) == "arg"
    assert jobs.get("variadic")(context("variadic", 1, 2)) == ((1, 2), {})


def test_unknown_jobtype_raises_a_faktory_error_named_for_the_errtype() -> None:
    with pytest.raises(UnknownJobType, match="'Nope'") as info:
        Registry().get("Nope")
    assert isinstance(info.value, FaktoryError)
    assert isinstance(info.value, LookupError)
    assert type(info.value).__name__ == "UnknownJobType"


def test_wrong_arity_is_a_type_error_naming_the_jobtype() -> None:
    jobs = Registry()
    jobs.add("pair", lambda a, b: (a, b))
    with pytest.raises(TypeError, match=r"job pair\(a, b\) cannot take args \[1\]"):
        jobs.get("pair")(context("pair", 1))
    with pytest.raises(TypeError, match="cannot take args"):
        jobs.get("pair")(context("pair", 1, 2, 3))


def test_args_that_are_not_a_list_are_a_type_error() -> None:
    jobs = Registry()
    jobs.add("one", lambda a: a)
    ctx = JobContext.from_payload({"jid": "jid-00000001", "jobtype": "one", "args": {"a": 1}})
    with pytest.raises(TypeError, match="must be a JSON array"):
        jobs.get("one")(ctx)


def test_replacing_a_function_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    jobs = Registry()

    def first() -> None: ...

    def second() -> None: ...

    jobs.add("job", first)
    with caplog.at_level(logging.WARNING, logger="celery_faktory.worker.registry"):
        jobs.add("job", first)  # the same function again: silent
        assert not caplog.records
        jobs.add("job", second)
    assert "replaces" in caplog.text
    assert jobs.get("job").function is second


def test_add_refuses_an_empty_jobtype_and_a_non_callable() -> None:
    jobs = Registry()
    with pytest.raises(ValueError, match="non-empty"):
        jobs.add("", print)
    with pytest.raises(TypeError, match="callable"):
        jobs.add("x", 42)  # type: ignore[arg-type]


def test_module_level_register_fills_the_default_registry() -> None:
    name = unique("default-registry")

    @register(name)
    def job() -> str:
        return "ran"

    assert name in registry
    assert registry.get(name)(context(name)) == "ran"
