"""HandOff (slots and job states) and Backoff: pure tests."""

from __future__ import annotations

import threading
import time

from celery_faktory.worker.backoff import Backoff
from celery_faktory.worker.context import JobContext
from celery_faktory.worker.handoff import EntryState, HandOff


def context(n: int) -> JobContext:
    return JobContext.from_payload({"jid": f"jid-{n:08d}", "jobtype": "x"})


def test_slots_bound_fetched_and_unfinished_jobs() -> None:
    handoff = HandOff(2)
    assert handoff.acquire(0)
    assert handoff.acquire(0)
    assert not handoff.acquire(0.01)
    handoff.release()
    assert handoff.acquire(0)
    entry = handoff.admit(context(1))
    assert entry is not None
    assert handoff.begin(entry)
    assert handoff.in_progress == 1
    assert not handoff.acquire(0.01)  # the running job still holds its slot
    reported: list[str] = []
    assert handoff.finish(entry, lambda: reported.append("done"))
    assert reported == ["done"]
    assert entry.state is EntryState.DONE
    assert handoff.in_progress == 0
    assert handoff.acquire(0)


def test_a_waiting_acquire_gets_the_slot_a_finished_job_frees() -> None:
    handoff = HandOff(1)
    assert handoff.acquire(0)
    entry = handoff.admit(context(1))
    assert entry is not None
    assert handoff.begin(entry)
    threading.Timer(0.05, handoff.finish, (entry, lambda: None)).start()
    started = time.monotonic()
    assert handoff.acquire(2)
    assert time.monotonic() - started < 1


def test_close_abandons_only_jobs_that_never_started() -> None:
    handoff = HandOff(3)
    entries = []
    for n in range(3):
        assert handoff.acquire(0)
        entry = handoff.admit(context(n))
        assert entry is not None
        entries.append(entry)
    assert handoff.begin(entries[0])
    never_started = handoff.close()
    assert [entry.context.jid for entry in never_started] == ["jid-00000001", "jid-00000002"]
    assert all(entry.state is EntryState.NEVER_STARTED for entry in never_started)
    assert not handoff.begin(entries[1])  # a thread that picks it up later must not run it
    assert handoff.admit(context(9)) is None  # closed
    assert not handoff.acquire(0)
    assert handoff.finish(entries[0], lambda: None)


def test_abandoned_running_job_outcome_is_dropped() -> None:
    handoff = HandOff(1)
    assert handoff.acquire(0)
    entry = handoff.admit(context(1))
    assert entry is not None
    assert handoff.begin(entry)
    handoff.close()
    soon = time.monotonic() + 0.05
    assert not handoff.wait_idle(lambda: soon)
    assert handoff.abandon_running() == [entry]
    assert handoff.wait_idle(lambda: time.monotonic())  # abandoned jobs are not waited for
    assert handoff.in_progress == 1  # but still counted while their thread runs
    reported: list[str] = []
    assert not handoff.finish(entry, lambda: reported.append("late"))
    assert reported == []
    assert handoff.in_progress == 0


def test_wait_idle_reads_a_shortened_deadline_after_wake() -> None:
    handoff = HandOff(1)
    assert handoff.acquire(0)
    entry = handoff.admit(context(1))
    assert entry is not None
    assert handoff.begin(entry)
    deadline = [time.monotonic() + 30]

    def shorten() -> None:
        deadline[0] = time.monotonic()
        handoff.wake()

    threading.Timer(0.05, shorten).start()
    started = time.monotonic()
    assert not handoff.wait_idle(lambda: deadline[0])
    assert time.monotonic() - started < 5


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.1
