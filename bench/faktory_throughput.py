"""Producer and worker throughput of celery_faktory beside the PyPI clients `faktory` and `pyfaktory`.

Every row is measured in one run against one server: the in-memory server of this package started in its own
process (the default), or a real Faktory given with ``--url`` / ``FAKTORY_URL``. Raw-socket rows give the
ceiling a single connection reaches with no client library at all.

    python bench/faktory_throughput.py                 # against our server, in a subprocess
    python bench/faktory_throughput.py --url tcp://127.0.0.1:7419 --jobs 20000

Producer rows push ``--jobs`` jobs ``["x", [i, "string", 3]]``; worker rows drain ``--drain`` trivial jobs from one
queue with concurrency 20, each worker in a process of its own, timed from the first job taken to the last ACK.
The peers (`faktory`, `pyfaktory`) come with the ``dev`` extra; rows for a missing peer say so.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery_faktory import Client, Job
from celery_faktory.protocol import NEED_DATA, ReplyParser, commands

HERE = Path(__file__).resolve().parent
ROWS: list[tuple[str, str, float | None, str]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "celery_faktory.server", "--port", str(port), "--log-level", "warning"]
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"tcp://127.0.0.1:{port}", process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the server did not start")


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
    record("producer", "raw socket: sequential PUSH", jobs, time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, jobs, 100):
        window = lines[start : start + 100]
        raw.sock.sendall(b"".join(window))
        for _ in window:
            raw.reply()
    record("producer", "raw socket: PUSH pipelined 100 per write", jobs, time.perf_counter() - started)
    fetch = commands.fetch(queue)
    started = time.perf_counter()
    for _ in range(jobs):
        job = raw.request(fetch)
        jid = job.value.split('"jid":"', 1)[1].split('"', 1)[0]
        raw.request(commands.ack(jid))
    record("worker", "raw socket: sequential FETCH + ACK, 1 conn", jobs, time.perf_counter() - started, "ceiling")
    raw.request(commands.queue_remove(queue))
    bulk = [payload(queue, n) for n in range(jobs)]
    started = time.perf_counter()
    for start in range(0, jobs, 1000):
        raw.request(commands.push_bulk(bulk[start : start + 1000]))
    record("producer", "raw socket: PUSHB of 1000", jobs, time.perf_counter() - started)
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

        record("producer", "celery_faktory: push() one by one", jobs, timed(one_by_one))

        def pipelined() -> None:
            client.push_many(Job("x", [n, "string", 3], queue=queue) for n in range(jobs))

        record("producer", "celery_faktory: push_many() pipelined", jobs, timed(pipelined))

        def pipelined_pooled() -> None:
            client.push_many((Job("x", [n, "string", 3], queue=queue) for n in range(jobs)), connections=4)

        record("producer", "celery_faktory: push_many() over 4 connections", jobs, timed(pipelined_pooled))

        def pooled() -> None:
            def part(index: int) -> None:
                for n in range(index, jobs, 4):
                    client.push(Job("x", [n, "string", 3], queue=queue))

            threaded(4, part)

        record("producer", "celery_faktory: push() from 4 threads, pool 4", jobs, timed(pooled))

        def bulk() -> None:
            client.push_bulk(Job("x", [n, "string", 3], queue=queue) for n in range(jobs))

        record("producer", "celery_faktory: push_bulk() (PUSHB)", jobs, timed(bulk))

        def bulk_pooled() -> None:
            client.push_bulk((Job("x", [n, "string", 3], queue=queue) for n in range(jobs)), connections=4)

        record("producer", "celery_faktory: push_bulk() over 4 connections", jobs, timed(bulk_pooled))
        client.queue_remove(queue)


def cdrx_producer_rows(url: str, jobs: int) -> None:
    try:
        import faktory
    except ImportError:
        record("producer", "faktory (cdrx): not installed", jobs, None, "pip install faktory")
        return
    queue = "bench-cdrx-" + uuid.uuid4().hex[:8]

    def one_by_one() -> None:
        with faktory.connection(url) as client:
            for n in range(jobs):
                client.queue("x", args=(n, "string", 3), queue=queue, retry=25)

    record("producer", "faktory (cdrx): queue() one by one", jobs, timed(one_by_one))

    def pooled() -> None:
        def part(index: int) -> None:
            with faktory.connection(url) as client:
                for n in range(index, jobs, 4):
                    client.queue("x", args=(n, "string", 3), queue=queue, retry=25)

        threaded(4, part)

    record("producer", "faktory (cdrx): 4 threads, 4 connections", jobs, timed(pooled))
    record("producer", "faktory (cdrx): bulk push", jobs, None, "not supported")
    with Client(url) as client:
        client.queue_remove(queue)


def pyfaktory_producer_rows(url: str, jobs: int) -> None:
    try:
        from pyfaktory import Client as PyClient
        from pyfaktory import Job as PyJob
        from pyfaktory import Producer
    except ImportError:
        record("producer", "pyfaktory: not installed", jobs, None, "pip install pyfaktory")
        return
    queue = "bench-pyf-" + uuid.uuid4().hex[:8]

    def one_by_one() -> None:
        with PyClient(faktory_url=url, role="producer") as client:
            producer = Producer(client=client)
            for n in range(jobs):
                producer.push(PyJob(jobtype="x", args=[n, "string", 3], queue=queue))

    record("producer", "pyfaktory: push() one by one", jobs, timed(one_by_one))

    def pooled() -> None:
        def part(index: int) -> None:
            with PyClient(faktory_url=url, role="producer") as client:
                producer = Producer(client=client)
                for n in range(index, jobs, 4):
                    producer.push(PyJob(jobtype="x", args=[n, "string", 3], queue=queue))

        threaded(4, part)

    record("producer", "pyfaktory: 4 threads, 4 connections", jobs, timed(pooled))

    def bulk() -> None:
        with PyClient(faktory_url=url, role="producer") as client:
            producer = Producer(client=client)
            for start in range(0, jobs, 1000):
                batch = [PyJob(jobtype="x", args=[n, "string", 3], queue=queue) for n in range(start, start + 1000)]
                producer.push_bulk(batch)

    record("producer", "pyfaktory: push_bulk() (PUSHB)", jobs, timed(bulk))

    def bulk_pooled() -> None:
        def part(index: int) -> None:
            with PyClient(faktory_url=url, role="producer") as client:
                producer = Producer(client=client)
                for start in range(index * 1000, jobs, 4000):
                    end = min(start + 1000, jobs)
                    producer.push_bulk(
                        [PyJob(jobtype="x", args=[n, "string", 3], queue=queue) for n in range(start, end)]
                    )

        threaded(4, part)

    record("producer", "pyfaktory: push_bulk() from 4 threads, 4 connections", jobs, timed(bulk_pooled))
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
        record("worker", f"{name}, drain {jobs:,}", jobs, seconds, "" if seconds else "failed or not installed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("FAKTORY_URL"), help="a Faktory server (default: ours)")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per producer row (default 10,000)")
    parser.add_argument("--drain", type=int, default=20_000, help="jobs per worker row (default 20,000)")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        url, server = start_server()
    try:
        with Client(url) as client:
            version = client.info()["server"]["faktory_version"]
            description = "celery_faktory.server" if server else f"Faktory {version}"
        print(f"server: {description} at {url}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        raw_rows(url, args.jobs)
        ours_producer_rows(url, args.jobs)
        cdrx_producer_rows(url, args.jobs)
        pyfaktory_producer_rows(url, args.jobs)
        worker_rows(url, args.drain)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    print()
    print("| group | what | jobs/s | note |\n| --- | --- | ---: | --- |")
    for group, name, rate, note in ROWS:
        print(f"| {group} | {name} | {'n/a' if rate is None else f'{rate:,.0f}'} | {note} |")


if __name__ == "__main__":
    main()
