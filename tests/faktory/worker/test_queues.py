"""Queue order: the pure functions, the CLI's -q parsing, and one live strict-order run."""

from __future__ import annotations

from random import Random

import click
import pytest

from celery_faktory import Client
from celery_faktory.errors import ConfigurationError
from celery_faktory.worker import JobContext, QueuePlan, Registry, parse_queues, strict_order, weighted_order
from celery_faktory.worker.__main__ import cli_queues
from tests.faktory.wire import unique, wait_until
from tests.faktory.worker.conftest import WorkerFactory
from tests.faktory.worker.support import push


def test_a_sequence_of_names_is_strict_order() -> None:
    plan = parse_queues(["critical", "default", "low"])
    assert plan == QueuePlan(("critical", "default", "low"))
    assert not plan.weighted
    rng = Random(1)
    assert all(plan.order(rng) == ["critical", "default", "low"] for _ in range(50))
    assert strict_order(("b", "a")) == ["b", "a"]


def test_a_mapping_is_weighted() -> None:
    plan = parse_queues({"critical": 3, "default": 1})
    assert plan == QueuePlan(("critical", "default"), (3, 1))
    assert plan.weighted


def test_name_comma_weight_strings_are_weighted_and_a_bare_name_weighs_one() -> None:
    assert parse_queues(["critical,5", "default"]) == QueuePlan(("critical", "default"), (5, 1))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ([], "at least one queue"),
        ("default", "not the string"),
        (["bad name"], "queue names must match"),
        (["a", "a"], "repeat"),
        ({"a": 0}, "positive integer"),
        (["a,x"], "positive integer"),
        ({"a": True}, "positive integer"),
    ],
)
def test_bad_queue_specs_are_configuration_errors(spec: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_queues(spec)  # type: ignore[arg-type]


def test_weighted_order_always_names_every_queue_once() -> None:
    rng = Random(7)
    for _ in range(200):
        order = weighted_order(["a", "b", "c"], [5, 1, 1], rng)
        assert sorted(order) == ["a", "b", "c"]


def test_weighted_order_puts_each_queue_first_in_proportion_to_its_weight() -> None:
    rng = Random(42)
    draws = 20000
    firsts = [weighted_order(["heavy", "light"], [3, 1], rng)[0] for _ in range(draws)]
    assert firsts.count("heavy") / draws == pytest.approx(0.75, abs=0.02)
    firsts = [weighted_order(["a", "b", "c"], [1, 1, 2], rng)[0] for _ in range(draws)]
    assert firsts.count("c") / draws == pytest.approx(0.5, abs=0.02)
    assert firsts.count("a") / draws == pytest.approx(0.25, abs=0.02)


def test_cli_commas_mean_strict_order_and_colons_weights() -> None:
    assert cli_queues(["critical,default"]) == ["critical", "default"]
    assert cli_queues(["critical", "default"]) == ["critical", "default"]
    assert cli_queues(["critical:3", "default:1"]) == {"critical": 3, "default": 1}
    assert cli_queues(["critical:3,default"]) == {"critical": 3, "default": 1}
    assert cli_queues([]) == ["default"]
    with pytest.raises(click.BadParameter):
        cli_queues(["critical:0"])
    with pytest.raises(click.BadParameter):
        cli_queues(["critical:x"])


def test_live_strict_order_drains_the_first_queue_first(
    client: Client, registry: Registry, make_worker: WorkerFactory
) -> None:
    high, low = unique("high"), unique("low")
    order: list[str] = []

    @registry.register
    def job(*, job: JobContext) -> None:
        order.append(job.queue)

    try:
        for _ in range(3):
            push(client, low, "job")
        for _ in range(3):
            push(client, high, "job")
        worker = make_worker(queues=(high, low), concurrency=1, fetchers=1).start()
        wait_until(lambda: worker.stats().acked == 6)
        assert order == [high] * 3 + [low] * 3
    finally:
        client.queue_remove(high, low)
