"""Each Lua transition alone, on real Redis, with a fixed clock: replays return the first outcome."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celery_deflow.keys import KeySchema
from celery_deflow.model import merge_options
from celery_deflow.store import AttemptRef, NewStep, Owed, StateStore, WorkflowRecord

WF = "wf:test"
LEASE_MS = 1000


class FixedClock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def store(redis_url: str, clock: FixedClock) -> Iterator[StateStore]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield StateStore(client, KeySchema("t"), lease_ms=LEASE_MS, state_ttl_ms=60_000, result_ttl_ms=30_000, clock=clock)
    client.close()


def make(store: StateStore, *steps: tuple[bool, bool, list[Any]], attempts: int = 1) -> None:
    options = merge_options({"task_max_fail_count": attempts})
    record = WorkflowRecord(WF, "test", {}, {}, "pending", True, "", 0, 0, 0)
    store.write_workflow(
        record,
        (
            NewStep(i, f"s{i}", f"{WF}:s{i}", "S", str(i), None, options, "m:S", b, a, tasks)
            for i, (b, a, tasks) in enumerate(steps, 1)
        ),
    )


def done_counts(store: StateStore, sid: int) -> tuple[int, int]:
    return store.counts(WF, sid)


def test_start_skips_empty_tasks_phases_and_finishes(store: StateStore) -> None:
    make(store, (False, False, []), (True, False, []), (False, False, [1]))
    advance = store.start_workflow(WF)
    assert advance == ("launch", "2:b", 0)
    assert store.start_workflow(WF).action == "stale"  # replay
    assert store.order(WF) == [1]
    assert store.close_phase(WF, "2:b", arrived=True).action == "wait"  # hook not run yet
    assert store.claim_hook(WF, 2, "b", "L1") == "ok"
    assert store.claim_hook(WF, 2, "b", "L2") == "busy"
    assert store.finish_hook(WF, 2, "b", "L1", None) is True  # body already arrived
    assert store.finish_hook(WF, 2, "b", "L1", None) is True  # a replay says the same
    assert store.close_phase(WF, "2:b", arrived=False) == ("launch", "3:t", 1)
    assert store.close_phase(WF, "2:b", arrived=True).action == "stale"
    assert store.order(WF) == [1, 2, 3]


def test_no_steps_is_done_and_published(store: StateStore) -> None:
    make(store)
    pubsub = store.client.pubsub()
    pubsub.subscribe(store.keys.channel(WF))
    pubsub.get_message(timeout=1)
    assert store.start_workflow(WF).action == "done"
    assert store.status(WF) == "done"
    message = pubsub.get_message(timeout=1)
    assert message is not None
    assert message["data"] == f'{{"type":"done","workflow_id":"{WF}"}}'
    pubsub.close()


def test_claim_and_finish_are_idempotent(store: StateStore) -> None:
    make(store, (False, False, ["a", "b", "c"]))
    store.start_workflow(WF)
    claimed = store.claim_tasks(WF, 1, "L1", ["r", 0, 3])
    assert claimed == [(0, 1, "a"), (1, 1, "b"), (2, 1, "c")]
    assert store.claim_tasks(WF, 1, "L2", ["r", 0, 3]) == []  # a redelivered message takes nothing
    outcomes = [(0, 1, "s", '"A"'), (1, 1, "s", '"B"')]
    (finished, _) = store.finish_and_claim(WF, 1, "L1", outcomes, None, None)
    assert finished == (False, [])
    store.finish_and_claim(WF, 1, "L1", outcomes, None, None)  # replay counts nothing
    assert done_counts(store, 1) == (2, 3)
    assert store.close_phase(WF, "1:t", arrived=True).action == "wait"
    (finished, _) = store.finish_and_claim(WF, 1, "L1", [(2, 1, "s", '"C"')], None, None)
    assert finished == (True, [])  # body arrived before: the last finisher may close
    assert store.close_phase(WF, "1:t", arrived=False).action == "done"
    rows = list(store.tasks(WF, 1, all_finished=True))
    assert [(r.data, r.result) for r in rows] == [("a", "A"), ("b", "B"), ("c", "C")]
    assert store.workflow(WF) is not None
    assert store.client.exists(store.keys.step_part(WF, 1, "st")) == 0  # cleaned
    assert 0 < store.client.pttl(store.keys.step_part(WF, 1, "res")) <= 30_000


def test_retries_and_final_failure(store: StateStore) -> None:
    make(store, (False, False, ["x"]), attempts=2)
    store.start_workflow(WF)
    store.claim_tasks(WF, 1, "L1", ["r", 0, 1])
    finished, _ = store.finish_and_claim(WF, 1, "L1", [(0, 1, "f", "boom")], None, None)
    assert finished == (False, [(0, 2)])
    assert store.claim_tasks(WF, 1, "L2", ["l", 0, 3]) == []  # not due
    assert store.claim_tasks(WF, 1, "L2", ["l", 0, 2]) == [(0, 2, "x")]
    assert store.claim_tasks(WF, 1, "L3", ["l", 0, 2]) == []  # duplicate retry message
    finished, _ = store.finish_and_claim(WF, 1, "L2", [(0, 2, "f", "boom again")], None, None)
    assert finished == (False, [])
    (row,) = store.tasks(WF, 1, all_finished=False)
    assert (row.finished, row.failed_count, row.error, row.result) == (True, 2, "boom again", None)
    assert done_counts(store, 1) == (1, 1)


def test_reclaim_expired_lease(store: StateStore, clock: FixedClock) -> None:
    make(store, (False, False, ["x", "y"]), attempts=2)
    store.start_workflow(WF)
    store.claim_tasks(WF, 1, "L1", ["r", 0, 2])
    assert store.expired_leases() == []
    assert store.reclaim_lease("L1", "worker lost") is None  # still live
    clock.now += LEASE_MS + 1
    assert store.expired_leases() == ["L1"]
    reclaimed = store.reclaim_lease("L1", "worker lost")
    assert reclaimed is not None
    assert (reclaimed.workflow_id, reclaimed.sid, reclaimed.kind, reclaimed.retries) == (WF, 1, "t", [(0, 2), (1, 2)])
    assert store.reclaim_lease("L1", "worker lost") is None  # another scanner got it
    finished, _ = store.finish_and_claim(WF, 1, "L1", [(0, 1, "s", '"late"')], None, None)
    assert finished == (False, [])  # the lost attempt's late outcome counts nothing
    assert done_counts(store, 1) == (0, 2)
    rows = list(store.tasks(WF, 1, all_finished=False))
    assert [(r.failed_count, r.error, r.finished) for r in rows] == [(1, "worker lost", False)] * 2


def test_renewal_keeps_a_lease(store: StateStore, clock: FixedClock) -> None:
    make(store, (False, False, ["x"]))
    store.start_workflow(WF)
    store.claim_tasks(WF, 1, "L1", ["r", 0, 1])
    clock.now += LEASE_MS - 1
    store.renew(["L1", "unknown"], [])
    clock.now += LEASE_MS - 1
    assert store.expired_leases() == []
    assert store.client.zscore(store.keys.leases(), "unknown") is None  # never re-created


def test_add_after_orders_by_task_then_call(store: StateStore) -> None:
    make(store, (False, False, ["a", "b"]), (False, False, ["next"]))
    store.start_workflow(WF)
    store.claim_tasks(WF, 1, "L1", ["r", 0, 2])
    options = merge_options()

    def add(position: int, call: int, name: str) -> tuple[int, str, str, str] | None:
        ref = AttemptRef(WF, "1:t", position, 1, "L1", call)
        return store.add_after(
            ref,
            step_id=name,
            name=name,
            handler="m:S",
            data=None,
            options=options,
            has_before=False,
            has_after=False,
            tasks=[name],
        )

    b1 = add(1, 1, "b1")  # task 1 adds first ...
    a1 = add(0, 1, "a1")  # ... but task 0's additions run first
    a2 = add(0, 2, "a2")
    assert add(0, 2, "other") == a2  # replay: the first outcome
    assert a1 is not None
    assert b1 is not None
    assert [b1[2], a1[2]] == ["1.1", "1.2"]  # indexes in creation order
    store.finish_and_claim(WF, 1, "L1", [(0, 1, "s", "0"), (1, 1, "s", "0")], None, None)
    advance = store.close_phase(WF, "1:t", arrived=True)
    assert advance.token == f"{a1[0]}:t"
    order = [advance.token]
    for _ in range(2):
        sid = int(order[-1].split(":")[0])
        store.claim_tasks(WF, sid, f"L{sid}", ["r", 0, 1])
        store.finish_and_claim(WF, sid, f"L{sid}", [(0, 1, "s", "0")], None, None)
        order.append(store.close_phase(WF, order[-1], arrived=True).token)
    assert order == [f"{a1[0]}:t", f"{a2[0]}:t", f"{b1[0]}:t"]


def test_additions_need_a_live_attempt(store: StateStore) -> None:
    make(store, (False, False, ["a"]), (False, False, []))
    store.start_workflow(WF)
    store.claim_tasks(WF, 1, "L1", ["r", 0, 1])
    live = AttemptRef(WF, "1:t", 0, 1, "L1", 1)
    assert store.add_tasks(live, 1, ["b"]) == ("ok", 1, 2, True)
    assert store.add_tasks(live, 1, ["b"]) == ("ok", 1, 2, True)  # replay
    assert store.add_tasks(live._replace(call=2), 2, ["c"]) == ("ok", 0, 1, False)  # a later step's tasks
    store.finish_and_claim(WF, 1, "L1", [(0, 1, "s", "0")], None, None)
    stale = live._replace(call=3)
    assert store.add_tasks(stale, 1, ["d"])[0] == "closed"  # the attempt is over
    assert done_counts(store, 1) == (1, 2)


def test_concurrency_slots(store: StateStore, clock: FixedClock) -> None:
    make(store, (False, False, ["a", "b", "c", "d"]))
    store.start_workflow(WF)

    def slot(node: str, member: str) -> tuple[str, str, int]:
        return f"{node}|{member}", f"{node}|", 1

    assert store.claim_tasks(WF, 1, "L1", ["r", 0, 1], slot("n1", "A")) == [(0, 1, "a")]
    assert store.claim_tasks(WF, 1, "L2", ["r", 1, 2], slot("n1", "B")) == "busy"
    assert store.claim_tasks(WF, 1, "L3", ["r", 1, 2], slot("n2", "C")) == [(1, 1, "b")]  # per node
    clock.now += LEASE_MS + 1  # the holders died: their slots expired
    assert store.claim_tasks(WF, 1, "L4", ["r", 2, 3], slot("n1", "B")) == [(2, 1, "c")]
    assert store.claim_tasks(WF, 1, "L5", ["r", 3, 4], slot("n1", "D")) == "busy"
    store.finish_and_claim(WF, 1, "L4", [(2, 1, "s", "1")], None, None, release="n1|B")
    assert store.claim_tasks(WF, 1, "L5", ["r", 3, 4], slot("n1", "D")) == [(3, 1, "d")]


def test_cancel_stops_claims(store: StateStore) -> None:
    make(store, (False, False, ["a", "b"]))
    store.start_workflow(WF)
    assert store.cancel(WF, '{"type":"error"}')
    assert not store.cancel(WF, '{"type":"error"}')
    assert store.status(WF) == "cancelled"
    assert store.claim_tasks(WF, 1, "L1", ["r", 0, 2]) is None
    assert store.close_phase(WF, "1:t", arrived=True).action == "stale"


def test_replays_return_the_first_outcome(store: StateStore, clock: FixedClock) -> None:
    make(store, (False, False, ["a", "b", "c"]), attempts=2)
    store.start_workflow(WF)
    first = store.claim_tasks(WF, 1, "L1", ["r", 0, 2])
    assert store.claim_tasks(WF, 1, "L1", ["r", 0, 2]) == first  # same lease: same attempts, no new ones
    outcomes = [(0, 1, "f", "boom"), (1, 1, "s", '"B"')]
    assert store.finish_and_claim(WF, 1, "L1", outcomes, None, None)[0] == (False, [(0, 2)])
    assert store.finish_and_claim(WF, 1, "L1", outcomes, None, None)[0] == (False, [(0, 2)])
    store.claim_tasks(WF, 1, "L2", ["r", 2, 3])
    clock.now += LEASE_MS + 1
    keys = [store.keys.leases(), store.keys.lease("L2")]
    args = ["L2", clock.now, "worker lost", 60_000]
    taken = store.scripts.reclaim_lease(keys, [*args, "call-1", clock.now])
    assert store.scripts.reclaim_lease(keys, [*args, "call-1", clock.now]) == taken  # the claimant's replay
    assert store.scripts.reclaim_lease(keys, [*args, "call-2"]) == ["gone"]  # another scanner
    assert taken[4:] == [2, 2]


def test_pipeline_after_the_script_cache_is_flushed(store: StateStore) -> None:
    make(store, (False, False, ["a", "b", "c"]))
    store.start_workflow(WF)
    assert store.claim_tasks(WF, 1, "L1", ["r", 0, 1]) == [(0, 1, "a")]
    store.client.script_flush()  # e.g. a Redis restart: EVALSHA answers NOSCRIPT, the pipeline runs again
    finished, claimed = store.finish_and_claim(WF, 1, "L1", [(0, 1, "s", "1")], "L2", ["r", 1, 3])
    assert finished == (False, [])
    assert claimed == [(1, 1, "b"), (2, 1, "c")]
    store.client.script_flush()
    finished, claimed = store.finish_and_claim(WF, 1, "L2", [(1, 1, "s", "1"), (2, 1, "s", "1")], "L3", ["r", 3, 3])
    assert finished == (False, [])
    assert done_counts(store, 1) == (3, 3)


def test_dispatches_are_owed_until_settled(store: StateStore, clock: FixedClock) -> None:
    make(store, (False, False, ["a", "b"]), attempts=2)
    store.start_workflow(WF)
    store.claim_tasks(WF, 1, "L1", ["r", 0, 2])
    store.add_tasks(AttemptRef(WF, "1:t", 0, 1, "L1", 1), 1, ["c", "d"])
    assert store.finish_and_claim(WF, 1, "L1", [(0, 1, "f", "boom"), (1, 1, "f", "bang")], None, None)[0] == (
        False,
        [(0, 2), (1, 2)],
    )
    assert store.overdue(WF) == []  # their publishers have two lease timeouts to confirm them
    clock.now += 2 * LEASE_MS
    added, retries = Owed(WF, 1, 2, 4), Owed(WF, 1, attempts=((0, 2), (1, 2)))
    assert set(store.overdue(WF)) == {added, retries}
    assert Owed.parse(WF, retries.member) == retries
    store.settle(added)
    assert store.overdue(WF) == [retries]
    store.claim_tasks(WF, 1, "L2", ["r", 2, 4])
    store.claim_tasks(WF, 1, "L3", ["l", 0, 2, 1, 2])
    clock.now += LEASE_MS + 1
    store.reclaim_lease("L3", "worker lost")  # both attempts lost: their last ones, nothing is owed
    store.finish_and_claim(WF, 1, "L2", [(2, 1, "s", "1"), (3, 1, "s", "1")], None, None)
    store.settle(retries)
    store.close_phase(WF, "1:t", arrived=True)
    assert store.status(WF) == "done"
    assert not store.client.exists(store.keys.owed(WF))  # working state, deleted with the rest
