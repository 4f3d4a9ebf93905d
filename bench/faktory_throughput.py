"""Producer and worker throughput of celery_faktory beside the PyPI clients `faktory` and `pyfaktory`.

Every row is measured in one run against one server: the in-memory server of this package started in its own
process (the default), or a real Faktory given with ``--url`` / ``FAKTORY_URL``. Raw-socket rows give the
ceiling a single connection reaches with no client library at all.

    python bench/faktory_throughput.py                 # against our server, in a subprocess
    python bench/faktory_throughput.py --url tcp://127.0.0.1:7419 --jobs 20000

Producer rows push ``--jobs`` jobs ``["x", [i, "string", 3]]``; worker rows drain ``--drain`` trivial jobs from one
queue with concurrency 20, each worker in a process of its own, timed from the first job taken to the last ACK.
The peers (`faktory`, `pyfaktory`) come with the ``dev`` extra; rows for a missing peer say so. Each peer is used
the way its documentation shows, at its fastest: cdrx's ``Client.queue`` on one open connection (it has no
bulk push), pyfaktory's ``Producer.push`` / ``push_bulk``, and one client per thread where rows use threads
(neither client may be shared between threads).

The table after the rows checks issue 3's targets. Producer rows fall into three groups, compared like with like:
*one by one* (a round trip per job), *pipelined/pooled* (many jobs, no PUSHB: pipelining or threads and
connections) and *bulk* (PUSHB). In each group "best peer" is the fastest row of either peer in that group, and
ours is our fastest row in it; a last line compares the fastest row of each side over all three groups. The
worker target compares our worker with the faster peer worker, and with the raw sequential FETCH + ACK row (the
"ceiling" of the issue). The raw pipelined FETCH/ACK row shows what the server itself manages when round trips
are shared, for context only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery_faktory import Client, Job
from celery_faktory.protocol import NEED_DATA, ReplyParser, commands

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.services import our_faktory  # noqa: E402

ROWS: list[tuple[str, str, float | None, str]] = []

#: The groups of rows; producer targets compare like with like, group by group.
ONE = "producer, one by one"
POOLED = "producer, pipelined/pooled"
BULK = "producer, bulk"
WORKER = "worker"
PRODUCER_GROUPS = (ONE, POOLED, BULK)
#: The note on the raw row that issue 3's worker target is measured against.
CEILING = "ceiling"
#: Connections (or threads) of the wider bulk rows, on both sides.
WIDE = 8


def record(group: str, name: str, jobs: int, seconds: float | None, note: str = "") -> None:
    rate = None if seconds is None else jobs / seconds
    ROWS.append((group, name, rate, note))
    shown = "n/a" if rate is None else f"{rate:,.0f} jobs/s"
    print(f"  {group:<22} {name:<44} {shown:>16}  {note}", flush=True)


def payload(queue: str, n: int) -> dict[str, Any]:
    return {"jid": uuid.uuid4().hex, "jobtype": "x", "args": [n, "string", 3], "queue": queue, "retry": 25}


# -- raw socket ----------------------------------------------------------------------------------------------


class Raw:
    """A bare socket speaking just enough protocol: the ceiling for one connection."""

    def __init__(self, url: str) -> None:
        client = Client(url)
        host, port = client.config.host, client.config.port
        client.close()
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = ReplyParser()
        self.reply()
        self.sock.sendall(b'HELLO {"v":2}\r\n')
        self.reply()

    def reply(self) -> Any:
        while (reply := self.parser.next_reply()) is NEED_DATA:
            self.parser.feed(self.sock.recv(262144))
        return reply

    def request(self, line: bytes) -> Any:
        self.sock.sendall(line)
        return self.reply()


def raw_rows(url: str, jobs: int) -> None:
    raw = Raw(url)
    queue = "bench-raw-" + uuid.uuid4().hex[:8]
    lines = [commands.push(payload(queue, n)) for n in range(jobs)]
    started = time.perf_counter()
    for line in lines:
        raw.request(line)
    record(ONE, "raw socket: sequential PUSH", jobs, time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, jobs, 100):
        window = lines[start : start + 100]
        raw.sock.sendall(b"".join(window))
        for _ in window:
            raw.reply()
    record(POOLED, "raw socket: PUSH pipelined 100 per write", jobs, time.perf_counter() - started)
    fetch = commands.fetch(queue)
    started = time.perf_counter()
    for _ in range(jobs):
        job = raw.request(fetch)
        jid = job.value.split('"jid":"', 1)[1].split('"', 1)[0]
        raw.request(commands.ack(jid))
    record(WORKER, "raw socket: sequential FETCH + ACK, 1 conn", jobs, time.perf_counter() - started, CEILING)
    raw.request(commands.queue_remove(queue))
    for start in range(0, jobs, 1000):
        raw.request(commands.push_bulk([payload(queue, n) for n in range(start, min(start + 1000, jobs))]))
    started = time.perf_counter()
    for start in range(0, jobs, 10):
        count = min(10, jobs - start)
        raw.sock.sendall(fetch * count)
        jids = [raw.reply().value.split('"jid":"', 1)[1].split('"', 1)[0] for _ in range(count)]
        raw.sock.sendall(b"".join(commands.ack(jid) for jid in jids))
        for _ in jids:
            raw.reply()
    seconds = time.perf_counter() - started
    record(WORKER, "raw socket: 10 FETCH then 10 ACK per write, 1 conn", jobs, seconds, "server bound, for context")
    raw.request(commands.queue_remove(queue))
    bulk = [payload(queue, n) for n in range(jobs)]
    started = time.perf_counter()
    for start in range(0, jobs, 1000):
        raw.request(commands.push_bulk(bulk[start : start + 1000]))
    record(BULK, "raw socket: PUSHB of 1000", jobs, time.perf_counter() - started)
    raw.request(commands.queue_remove(queue))
    raw.sock.close()


# -- producers -----------------------------------------------------------------------------------------------


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def threaded(threads: int, action: Callable[[int], None]) -> None:
    workers = [threading.Thread(target=action, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def ours_producer_rows(url: str, jobs: int) -> None:
    queue = "bench-ours-" + uuid.uuid4().hex[:8]
    with Client(url, pool_size=4) as client:

        def one_by_one() -> None:
            for n in range(jobs):
                client.push(Job("x", [n, "string", 3], queue=queue))

        record(ONE, "celery_faktory: push() one by one", jobs, timed(one_by_one))

        def pipelined() -> None:
            client.push_many(Job("x", [n, "string", 3], queue=queue) for n in range(jobs))

        record(POOLED, "celery_faktory: push_many() pipelined", jobs, timed(pipelined))

        def pipelined_pooled() -> None:
            client.push_many((Job("x", [n, "string", 3], queue=queue) for n in range(jobs)), connections=4)

        record(POOLED, "celery_faktory: push_many() over 4 connections", jobs, timed(pipelined_pooled))

        def pooled() -> None:
            def part(index: int) -> None:
                for n in range(index, jobs, 4):
                    client.push(Job("x", [n, "string", 3], queue=queue))

            threaded(4, part)

        record(POOLED, "celery_faktory: push() from 4 threads, pool 4", jobs, timed(pooled))

        def bulk() -> None:
            client.push_bulk(Job("x", [n, "string", 3], queue=queue) for n in range(jobs))

        record(BULK, "celery_faktory: push_bulk() (PUSHB)", jobs, timed(bulk))

        def bulk_pooled() -> None:
            client.push_bulk((Job("x", [n, "string", 3], queue=queue) for n in range(jobs)), connections=4)

        record(BULK, "celery_faktory: push_bulk() over 4 connections", jobs, timed(bulk_pooled))
        client.queue_remove(queue)
    with Client(url, pool_size=WIDE) as client:

        def bulk_wide() -> None:
            client.push_bulk((Job("x", [n, "string", 3], queue=queue) for n in range(jobs)), connections=WIDE)

        record(BULK, f"celery_faktory: push_bulk() over {WIDE} connections", jobs, timed(bulk_wide))
        client.queue_remove(queue)


def cdrx_producer_rows(url: str, jobs: int) -> None:
    try:
        import faktory
    except ImportError:
        record(ONE, "faktory (cdrx): not installed", jobs, None, "pip install faktory")
        return
    queue = "bench-cdrx-" + uuid.uuid4().hex[:8]

    def one_by_one() -> None:
        with faktory.connection(url) as client:
            for n in range(jobs):
                client.queue("x", args=(n, "string", 3), queue=queue, retry=25)

    record(ONE, "faktory (cdrx): queue() one by one", jobs, timed(one_by_one))

    def pooled() -> None:
        def part(index: int) -> None:
            with faktory.connection(url) as client:
                for n in range(index, jobs, 4):
                    client.queue("x", args=(n, "string", 3), queue=queue, retry=25)

        threaded(4, part)

    record(POOLED, "faktory (cdrx): 4 threads, 4 connections", jobs, timed(pooled))
    record(BULK, "faktory (cdrx): bulk push", jobs, None, "not supported")
    with Client(url) as client:
        client.queue_remove(queue)


def pyfaktory_producer_rows(url: str, jobs: int) -> None:
    try:
        from pyfaktory import Client as PyClient
        from pyfaktory import Job as PyJob
        from pyfaktory import Producer
    except ImportError:
        record(ONE, "pyfaktory: not installed", jobs, None, "pip install pyfaktory")
        return
    queue = "bench-pyf-" + uuid.uuid4().hex[:8]

    def one_by_one() -> None:
        with PyClient(faktory_url=url, role="producer") as client:
            producer = Producer(client=client)
            for n in range(jobs):
                producer.push(PyJob(jobtype="x", args=[n, "string", 3], queue=queue))

    record(ONE, "pyfaktory: push() one by one", jobs, timed(one_by_one))

    def pooled() -> None:
        def part(index: int) -> None:
            with PyClient(faktory_url=url, role="producer") as client:
                producer = Producer(client=client)
                for n in range(index, jobs, 4):
                    producer.push(PyJob(jobtype="x", args=[n, "string", 3], queue=queue))

        threaded(4, part)

    record(POOLED, "pyfaktory: 4 threads, 4 connections", jobs, timed(pooled))

    def bulk() -> None:
        with PyClient(faktory_url=url, role="producer") as client:
            producer = Producer(client=client)
            for start in range(0, jobs, 1000):
                batch = [PyJob(jobtype="x", args=[n, "string", 3], queue=queue) for n in range(start, start + 1000)]
                producer.push_bulk(batch)

    record(BULK, "pyfaktory: push_bulk() (PUSHB)", jobs, timed(bulk))

    def bulk_threads(threads: int) -> Callable[[], None]:
        def part(index: int) -> None:
            with PyClient(faktory_url=url, role="producer") as client:
                producer = Producer(client=client)
                for start in range(index * 1000, jobs, threads * 1000):
                    end = min(start + 1000, jobs)
                    producer.push_bulk(
                        [PyJob(jobtype="x", args=[n, "string", 3], queue=queue) for n in range(start, end)]
                    )

        return lambda: threaded(threads, part)

    for threads in (4, WIDE):
        name = f"pyfaktory: push_bulk() from {threads} threads, {threads} connections"
        record(BULK, name, jobs, timed(bulk_threads(threads)))
    with Client(url) as client:
        client.queue_remove(queue)


# -- workers -------------------------------------------------------------------------------------------------


def drain(url: str, implementation: str, jobs: int) -> float | None:
    """Fill a queue, run one worker process on it, and time it from its first FETCH to the last ACK."""
    queue = "bench-drain-" + uuid.uuid4().hex[:8]
    with Client(url) as client:
        client.push_bulk(Job("noop", [n], queue=queue) for n in range(jobs))
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        process = subprocess.Popen(
            [sys.executable, str(HERE / "drain_worker.py"), implementation, url, queue],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started = finished = None
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                info = client.info()["faktory"]
                size = info["queues"].get(queue, 0)
                busy = info["tasks"]["Busy"]["size"]
                now = time.perf_counter()
                if started is None and size < jobs:
                    started, taken = now, jobs - size
                if started is not None and size == 0 and busy == 0:
                    finished = now
                    break
                if process.poll() is not None:
                    print(process.stderr.read().decode()[-2000:] if process.stderr else "", file=sys.stderr)
                    return None
                time.sleep(0.005)
        finally:
            process.kill()
            process.wait()
            client.queue_remove(queue)
        if started is None or finished is None:
            return None
        return (finished - started) / (jobs - taken) * jobs


def worker_rows(url: str, jobs: int) -> None:
    for implementation, name in (
        ("ours", "celery_faktory: Worker, 20 threads"),
        ("cdrx", "faktory (cdrx): Worker, 20 threads"),
        ("pyfaktory", "pyfaktory: Consumer, 20 processes"),
    ):
        seconds = drain(url, implementation, jobs)
        record(WORKER, f"{name}, drain {jobs:,}", jobs, seconds, "" if seconds else "failed or not installed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("FAKTORY_URL"), help="a Faktory server (default: ours)")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per producer row (default 10,000)")
    parser.add_argument("--drain", type=int, default=20_000, help="jobs per worker row (default 20,000)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            url = stack.enter_context(our_faktory(Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        with Client(url) as client:
            version = client.info()["server"]["faktory_version"]
        description = f"Faktory {version}" if args.url else "celery_faktory.server"
        print(f"server: {description} at {url}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        raw_rows(url, args.jobs)
        ours_producer_rows(url, args.jobs)
        cdrx_producer_rows(url, args.jobs)
        pyfaktory_producer_rows(url, args.jobs)
        worker_rows(url, args.drain)
    print()
    print("| group | what | jobs/s | note |\n| --- | --- | ---: | --- |")
    for group, name, rate, note in ROWS:
        print(f"| {group} | {name} | {'n/a' if rate is None else f'{rate:,.0f}'} | {note} |")
    print()
    print_targets()


def side(name: str) -> str:
    """``ours``, ``raw`` or ``peer``: who a row measures."""
    if name.startswith("celery_faktory"):
        return "ours"
    return "raw" if name.startswith("raw socket") else "peer"


def best(groups: tuple[str, ...], who: str) -> tuple[str, float] | None:
    """The fastest row of ``who`` in ``groups``: its name and rate."""
    rows = [(rate, name) for group, name, rate, _ in ROWS if group in groups and side(name) == who and rate]
    if not rows:
        return None
    rate, name = max(rows)
    return name, rate


def print_targets() -> None:
    """Issue 3's targets, each from the rows above: ours against the best peer (or the raw ceiling)."""
    print("| target | ours | compared with | ratio | met |\n| --- | --- | --- | ---: | --- |")

    def line(target: str, ours: tuple[str, float] | None, other: tuple[str, float] | None, needed: float) -> None:
        if ours is None or other is None:
            print(f"| {target} | n/a | n/a | n/a | n/a |")
            return
        ratio = ours[1] / other[1]
        verdict = "yes" if ratio >= needed else "no"
        print(f"| {target} | {ours[0]}: {ours[1]:,.0f} | {other[0]}: {other[1]:,.0f} | {ratio:.2f}x | {verdict} |")

    for group in PRODUCER_GROUPS:
        line(f"{group} >= 2x best peer", best((group,), "ours"), best((group,), "peer"), 2.0)
    line("producer, any mode >= 2x best peer", best(PRODUCER_GROUPS, "ours"), best(PRODUCER_GROUPS, "peer"), 2.0)
    worker = best((WORKER,), "ours")
    line("worker >= 3x best peer", worker, best((WORKER,), "peer"), 3.0)
    ceiling = [(name, rate) for group, name, rate, note in ROWS if note == CEILING and rate]
    line("worker >= 80% of raw FETCH + ACK, 1 conn", worker, ceiling[0] if ceiling else None, 0.8)


if __name__ == "__main__":
    main()
