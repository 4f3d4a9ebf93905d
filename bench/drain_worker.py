"""One worker process for bench/faktory_throughput.py: ``drain_worker.py <ours|cdrx|pyfaktory> <url> <queue>``.

Runs a trivial ``noop`` job function with concurrency 20 until it is killed.
"""

from __future__ import annotations

import logging
import sys


def noop(*args: object) -> None:
    """The trivial job."""


def run_ours(url: str, queue: str) -> None:
    from celery_faktory.worker import Registry, Worker

    registry = Registry()
    registry.add("noop", noop)
    Worker(url, queues=[queue], concurrency=20, registry=registry).work()


def run_cdrx(url: str, queue: str) -> None:
    from faktory import Worker

    worker = Worker(faktory=url, queues=[queue], concurrency=20, use_threads=True)
    worker.register("noop", noop)
    worker.run()


def run_pyfaktory(url: str, queue: str) -> None:
    from pyfaktory import Client, Consumer

    with Client(faktory_url=url, role="consumer") as client:
        consumer = Consumer(client=client, queues=[queue], concurrency=20, priority="strict")
        consumer.register("noop", noop)
        consumer.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    implementation, url, queue = sys.argv[1:4]
    {"ours": run_ours, "cdrx": run_cdrx, "pyfaktory": run_pyfaktory}[implementation](url, queue)
