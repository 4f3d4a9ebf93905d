"""JobContext and current_job: pure tests."""

from __future__ import annotations

import pytest

from celery_faktory.worker import JobContext, current_job


def test_from_payload_reads_every_field() -> None:
    payload = {
        "jid": "abc123456",
        "jobtype": "SendEmail",
        "queue": "critical",
        "args": [1, "two", {"three": 3}],
        "custom": {"tenant": "acme"},
        "failure": {"retry_count": 2, "errtype": "ValueError"},
        "retry": 25,
    }
    ctx = JobContext.from_payload(payload)
    assert (ctx.jid, ctx.jobtype, ctx.queue) == ("abc123456", "SendEmail", "critical")
    assert ctx.args == [1, "two", {"three": 3}]
    assert ctx.custom == {"tenant": "acme"}
    assert ctx.retry_count == 2
    assert ctx.payload == payload
    assert ctx.payload is not payload
    assert ctx.extra == {}
    assert not ctx.is_cancelled


def test_defaults_for_a_first_run_without_custom() -> None:
    ctx = JobContext.from_payload({"jid": "abc123456", "jobtype": "x"})
    assert (ctx.queue, ctx.args, ctx.custom, ctx.retry_count) == ("default", [], {}, None)


@pytest.mark.parametrize("payload", [{"jobtype": "x"}, {"jid": "", "jobtype": "x"}, {"jid": "abc123456"}])
def test_from_payload_refuses_a_payload_without_jid_or_jobtype(payload: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"jid|jobtype"):
        JobContext.from_payload(payload)


def test_current_job_outside_a_job_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="outside a Faktory job"):
        current_job()


def test_cancel_sets_the_event_and_runs_callbacks_once() -> None:
    ctx = JobContext.from_payload({"jid": "abc123456", "jobtype": "x"})
    calls: list[str] = []
    ctx._on_cancel(lambda: calls.append("before"))
    ctx._cancel()
    assert ctx.is_cancelled
    assert ctx.cancelled.is_set()
    ctx._on_cancel(lambda: calls.append("after"))  # already cancelled: runs at once
    ctx._cancel()
    assert calls == ["before", "after"]
