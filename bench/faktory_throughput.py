"""Producer and worker throughput of celery_faktory beside the PyPI clients `faktory` and `pyfaktory`.

Every row is measured in one run against one server: the in-memory server of this package started in its own
process (the default), or a real Faktory given with ``--url`` / ``FAKTORY_URL``. Raw-socket rows give the
ceiling a single connection reaches with no client library at all, and the fastest the server takes jobs over
many connections.

    python bench/faktory_throughput.py                 # against our server, in a subprocess
    python bench/faktory_throughput.py --url tcp://127.0.0.1:7419 --rounds 5

Producer rows push ``--jobs`` jobs ``["x", [i, "string", 3]]``; worker rows drain ``--drain`` trivial jobs from one
queue with concurrency 20, each worker in a process of its own, timed from the first job taken to the last ACK.
The peers (`faktory`, `pyfaktory`) come with the ``dev`` extra; rows for a missing peer say so. Each peer is used
the way its documentation shows, at its fastest: cdrx's ``Client.queue`` on one open connection (it has no
bulk push), pyfaktory's ``Producer.push`` / ``push_bulk``, and one client per thread where rows use threads
(neither client may be shared between threads); rows with threads or connections come in the same widths for
every side.

A server shared with other work, or Faktory's own pauses (Redis snapshots, Go's collector), make single
measurements vary by 10-20 %: every row is measured ``--rounds`` times, the rounds interleaved (row 1, row 2 ...,
then again), and the best of each row is kept, as ``timeit`` does; the table shows the spread too.

The table after the rows checks issue 3's targets. Producer rows fall into three groups, compared like with like:
*one by one* (a round trip per job), *pipelined/pooled* (many jobs, no PUSHB: pipelining or threads and
connections) and *bulk* (PUSHB). In each group "best peer" is the fastest row of either peer in that group, and
ours is our fastest row in it; a last line compares the fastest row of each side over all three groups. Where
twice the best peer is more than the server was seen to take in that group (any side, raw rows included), no
client can reach the target on this server and the line says so. The worker target compares our worker with the
faster peer worker, and with the raw sequential FETCH + ACK row (the "ceiling" of the issue). The raw pipelined
FETCH/ACK row shows what the server itself manages when round trips are shared, for context only.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery_faktory import Client, Job
from celery_faktory.protocol import NEED_DATA, ReplyParser, commands

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.services import our_faktory  # noqa: E402

#: The groups of rows; producer targets compare like with like, group by group.
ONE = "producer, one by one"
POOLED = "producer, pipelined/pooled"
BULK = "producer, bulk"
WORKER = "worker"
PRODUCER_GROUPS = (ONE, POOLED, BULK)
#: The note on the raw row that issue 3's worker target is measured against.
CEILING = "ceiling"
#: Thread or connection counts of the rows that fan out, the same on every side.
WIDTHS = (4, 8, 16)
#: Seconds between two looks at the server while a worker drains: each INFO costs a real Faktory about 0.7 ms
#: of its time, which a drain bound by the server would otherwise share (a 50 ms step is 1 % of a 5 s drain).
POLL = 0.05


@dataclass
class Row:
    """One measurement, repeated every round: ``measure`` returns the seconds ``jobs`` took, or None."""

    group: str
    name: str
    jobs: int
    measure: Callable[[], float | None] | None
    note: str = ""
    rates: list[float] = field(default_factory=list)

    @property
    def best(self) -> float | None:
        return max(self.rates) if self.rates else None

    @property
    def side(self) -> str:
        """``ours``, ``raw`` or ``peer``: who the row measures."""
        if self.name.startswith("celery_faktory"):
            return "ours"
        return "raw" if self.name.startswith("raw socket") else "peer"


def payload(queue: str, n: int) -> dict[str, Any]:
    return {"jid": uuid.uuid4().hex, "jobtype": "x", "args": [n, "string", 3], "queue": queue, "retry": 25}


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


@contextlib.contextmanager
def fresh_queue(url: str, prefix: str) -> Iterator[str]:
    """A queue name of its own, removed afterwards with whatever is left in it."""
    queue = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield queue
    finally:
        with Client(url) as client:
            client.queue_remove(queue)


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

    def close(self) -> None:
        self.sock.close()


def _jid(reply: Any) -> str:
    return str(reply.value.split('"jid":"', 1)[1].split('"', 1)[0])


def raw_rows(url: str, jobs: int) -> list[Row]:
    def sequential_push() -> float:
        with fresh_queue(url, "raw") as queue, contextlib.closing(Raw(url)) as raw:
            lines = [commands.push(payload(queue, n)) for n in range(jobs)]
            started = time.perf_counter()
            for line in lines:
                raw.request(line)
            return time.perf_counter() - started

    def pipelined_push() -> float:
        with fresh_queue(url, "raw") as queue, contextlib.closing(Raw(url)) as raw:
            lines = [commands.push(payload(queue, n)) for n in range(jobs)]
            started = time.perf_counter()
            for start in range(0, jobs, 100):
                window = lines[start : start + 100]
                raw.sock.sendall(b"".join(window))
                for _ in window:
                    raw.reply()
            return time.perf_counter() - started

    def bulk_lines(queue: str) -> list[bytes]:
        return [
            commands.push_bulk([payload(queue, n) for n in range(start, min(start + 1000, jobs))])
            for start in range(0, jobs, 1000)
        ]

    def bulk() -> float:
        with fresh_queue(url, "raw") as queue, contextlib.closing(Raw(url)) as raw:
            lines = bulk_lines(queue)
            started = time.perf_counter()
            for line in lines:
                raw.request(line)
            return time.perf_counter() - started

    def bulk_wide(width: int) -> Callable[[], float]:
        def measure() -> float:
            with fresh_queue(url, "raw") as queue, contextlib.ExitStack() as stack:
                raws = [stack.enter_context(contextlib.closing(Raw(url))) for _ in range(width)]
                chunk = -(-jobs // (width * 4))  # four PUSHBs per connection, so that none waits on the others
                lines = [
                    commands.push_bulk([payload(queue, n) for n in range(start, min(start + chunk, jobs))])
                    for start in range(0, jobs, chunk)
                ]

                def part(index: int) -> None:
                    for line in lines[index::width]:
                        raws[index].request(line)

                return timed(lambda: threaded(width, part))

        return measure

    def draining(work: Callable[[Raw, bytes], None]) -> Callable[[], float]:
        """Fill a queue with ``jobs`` jobs, then time ``work(raw, fetch_line)`` taking them all."""

        def measure() -> float:
            with fresh_queue(url, "raw") as queue, contextlib.closing(Raw(url)) as raw:
                for line in bulk_lines(queue):
                    raw.request(line)
                return timed(lambda: work(raw, commands.fetch(queue)))

        return measure

    def fetch_ack(raw: Raw, fetch: bytes) -> None:
        for _ in range(jobs):
            raw.request(commands.ack(_jid(raw.request(fetch))))

    def fetch_ack_pipelined(raw: Raw, fetch: bytes) -> None:
        for start in range(0, jobs, 10):
            count = min(10, jobs - start)
            raw.sock.sendall(fetch * count)
            jids = [_jid(raw.reply()) for _ in range(count)]
            raw.sock.sendall(b"".join(commands.ack(jid) for jid in jids))
            for _ in jids:
                raw.reply()

    return [
        Row(ONE, "raw socket: sequential PUSH", jobs, sequential_push),
        Row(POOLED, "raw socket: PUSH pipelined 100 per write", jobs, pipelined_push),
        Row(BULK, "raw socket: PUSHB of 1000", jobs, bulk),
        *(
            Row(BULK, f"raw socket: PUSHB over {width} connections", jobs, bulk_wide(width), "jobs prebuilt")
            for width in WIDTHS[1:]
        ),
        Row(WORKER, "raw socket: sequential FETCH + ACK, 1 conn", jobs, draining(fetch_ack), CEILING),
        Row(
            WORKER,
            "raw socket: 10 FETCH then 10 ACK per write, 1 conn",
            jobs,
            draining(fetch_ack_pipelined),
            "for context",
        ),
    ]


# -- producers -----------------------------------------------------------------------------------------------


def ours_producer_rows(url: str, jobs: int) -> list[Row]:
    def jobs_for(queue: str) -> Iterator[Job]:
        return (Job("x", [n, "string", 3], queue=queue) for n in range(jobs))

    def with_client(pool: int, action: Callable[[Client, str], None]) -> Callable[[], float]:
        def measure() -> float:
            with fresh_queue(url, "ours") as queue, Client(url, pool_size=pool) as client:
                client.info()  # the connection is open before the clock starts, as the peers' are
                return timed(lambda: action(client, queue))

        return measure

    def one_by_one(client: Client, queue: str) -> None:
        for job in jobs_for(queue):
            client.push(job)

    def pooled_push(client: Client, queue: str) -> None:
        def part(index: int) -> None:
            for n in range(index, jobs, 4):
                client.push(Job("x", [n, "string", 3], queue=queue))

        threaded(4, part)

    def pipelined(width: int) -> Callable[[Client, str], None]:
        def action(client: Client, queue: str) -> None:
            client.push_many(jobs_for(queue), connections=width)

        return action

    def bulk(width: int) -> Callable[[Client, str], None]:
        def action(client: Client, queue: str) -> None:
            client.push_bulk(jobs_for(queue), connections=width)

        return action

    rows = [
        Row(ONE, "celery_faktory: push() one by one", jobs, with_client(1, one_by_one)),
        Row(POOLED, "celery_faktory: push() from 4 threads, pool 4", jobs, with_client(4, pooled_push)),
        Row(POOLED, "celery_faktory: push_many() pipelined", jobs, with_client(1, pipelined(1))),
        Row(BULK, "celery_faktory: push_bulk() (PUSHB)", jobs, with_client(1, bulk(1))),
    ]
    for width in WIDTHS:
        rows.append(
            Row(
                POOLED,
                f"celery_faktory: push_many() over {width} connections",
                jobs,
                with_client(width, pipelined(width)),
            )
        )
        rows.append(
            Row(BULK, f"celery_faktory: push_bulk() over {width} connections", jobs, with_client(width, bulk(width)))
        )
    return rows


def cdrx_producer_rows(url: str, jobs: int) -> list[Row]:
    try:
        import faktory
    except ImportError:
        return [Row(ONE, "faktory (cdrx): not installed", jobs, None, "pip install faktory")]

    def one_by_one() -> float:
        with fresh_queue(url, "cdrx") as queue, faktory.connection(url) as client:
            started = time.perf_counter()
            for n in range(jobs):
                client.queue("x", args=(n, "string", 3), queue=queue, retry=25)
            return time.perf_counter() - started

    def pooled(width: int) -> Callable[[], float]:
        def measure() -> float:
            with fresh_queue(url, "cdrx") as queue:

                def part(index: int) -> None:
                    with faktory.connection(url) as client:
                        for n in range(index, jobs, width):
                            client.queue("x", args=(n, "string", 3), queue=queue, retry=25)

                return timed(lambda: threaded(width, part))

        return measure

    return [
        Row(ONE, "faktory (cdrx): queue() one by one", jobs, one_by_one),
        *(
            Row(POOLED, f"faktory (cdrx): {width} threads, {width} connections", jobs, pooled(width))
            for width in WIDTHS
        ),
        Row(BULK, "faktory (cdrx): bulk push", jobs, None, "not supported"),
    ]


def pyfaktory_producer_rows(url: str, jobs: int) -> list[Row]:
    try:
        from pyfaktory import Client as PyClient
        from pyfaktory import Job as PyJob
        from pyfaktory import Producer
    except ImportError:
        return [Row(ONE, "pyfaktory: not installed", jobs, None, "pip install pyfaktory")]

    def one_by_one() -> float:
        with fresh_queue(url, "pyf") as queue, PyClient(faktory_url=url, role="producer") as client:
            producer = Producer(client=client)
            started = time.perf_counter()
            for n in range(jobs):
                producer.push(PyJob(jobtype="x", args=[n, "string", 3], queue=queue))
            return time.perf_counter() - started

    def threads_of(width: int, bulk: bool) -> Callable[[], float]:
        def measure() -> float:
            with fresh_queue(url, "pyf") as queue:

                def part(index: int) -> None:
                    with PyClient(faktory_url=url, role="producer") as client:
                        producer = Producer(client=client)
                        if not bulk:
                            for n in range(index, jobs, width):
                                producer.push(PyJob(jobtype="x", args=[n, "string", 3], queue=queue))
                            return
                        for start in range(index * 1000, jobs, width * 1000):
                            end = min(start + 1000, jobs)
                            producer.push_bulk(
                                [PyJob(jobtype="x", args=[n, "string", 3], queue=queue) for n in range(start, end)]
                            )

                return timed(lambda: threaded(width, part))

        return measure

    return [
        Row(ONE, "pyfaktory: push() one by one", jobs, one_by_one),
        Row(BULK, "pyfaktory: push_bulk() (PUSHB)", jobs, threads_of(1, bulk=True)),
        *(
            Row(POOLED, f"pyfaktory: {width} threads, {width} connections", jobs, threads_of(width, False))
            for width in WIDTHS
        ),
        *(
            Row(
                BULK, f"pyfaktory: push_bulk() from {width} threads, {width} connections", jobs, threads_of(width, True)
            )
            for width in WIDTHS
        ),
    ]


# -- workers -------------------------------------------------------------------------------------------------


def drain(url: str, implementation: str, jobs: int) -> float | None:
    """Fill a queue, run one worker process on it, and time it from its first FETCH to the last ACK."""
    queue = "bench-drain-" + uuid.uuid4().hex[:8]
    with Client(url) as client:
        client.push_bulk(Job("noop", [n], queue=queue) for n in range(jobs))
        reserved_before = client.info()["faktory"]["tasks"]["Busy"]["size"]  # by others: not ours to wait for
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        process = subprocess.Popen(
            [sys.executable, str(HERE / "drain_worker.py"), implementation, url, queue],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started: float | None = None
        finished: float | None = None
        taken = 0
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                info = client.info()["faktory"]
                size = info["queues"].get(queue, 0)
                busy = info["tasks"]["Busy"]["size"]
                now = time.perf_counter()
                if started is None and size < jobs:
                    started, taken = now, jobs - size
                if started is not None and size == 0 and busy <= reserved_before:
                    finished = now
                    break
                if process.poll() is not None:
                    print(process.stderr.read().decode()[-2000:] if process.stderr else "", file=sys.stderr)
                    return None
                time.sleep(POLL)
        finally:
            process.kill()
            process.wait()
            client.queue_remove(queue)
        if started is None or finished is None:
            return None
        return (finished - started) / (jobs - taken) * jobs


def worker_rows(url: str, jobs: int) -> list[Row]:
    def draining(implementation: str) -> Callable[[], float | None]:
        return lambda: drain(url, implementation, jobs)

    return [
        Row(WORKER, f"{name}, drain {jobs:,}", jobs, draining(implementation))
        for implementation, name in (
            ("ours", "celery_faktory: Worker, 20 threads"),
            ("cdrx", "faktory (cdrx): Worker, 20 threads"),
            ("pyfaktory", "pyfaktory: Consumer, 20 processes"),
        )
    ]


def run_rounds(rows: list[Row], rounds: int) -> None:
    """Measure every row ``rounds`` times, round by round, so that a slow stretch of the server hits every side."""
    for number in range(1, rounds + 1):
        for row in rows:
            if row.measure is None:
                continue
            seconds = row.measure()
            shown = "failed or not installed"
            if seconds:
                row.rates.append(row.jobs / seconds)
                shown = f"{row.rates[-1]:,.0f} jobs/s"
            print(f"  round {number}/{rounds}  {row.group:<26} {row.name:<52} {shown:>16}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("FAKTORY_URL"), help="a Faktory server (default: ours)")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per producer row (default 10,000)")
    parser.add_argument("--drain", type=int, default=20_000, help="jobs per worker row (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each row; the best counts (default 3)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            url = stack.enter_context(our_faktory(Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        with Client(url) as client:
            version = client.info()["server"]["faktory_version"]
        description = f"Faktory {version}" if args.url else "celery_faktory.server"
        print(f"server: {description} at {url}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        rows = [
            *raw_rows(url, args.jobs),
            *ours_producer_rows(url, args.jobs),
            *cdrx_producer_rows(url, args.jobs),
            *pyfaktory_producer_rows(url, args.jobs),
            *worker_rows(url, args.drain),
        ]
        run_rounds(rows, args.rounds)
    print()
    print(f"| group | what | jobs/s, best of {args.rounds} | spread | note |\n| --- | --- | ---: | ---: | --- |")
    for row in rows:
        best_rate = row.best
        spread = f"{min(row.rates):,.0f}-{best_rate:,.0f}" if best_rate and len(row.rates) > 1 else ""
        shown = "n/a" if best_rate is None else f"{best_rate:,.0f}"
        print(f"| {row.group} | {row.name} | {shown} | {spread} | {row.note} |")
    print()
    print_targets(rows)


def fastest(rows: list[Row], groups: tuple[str, ...], *sides: str) -> tuple[str, float] | None:
    """The fastest row of ``sides`` in ``groups``: its name and best rate."""
    found = [(row.best, row.name) for row in rows if row.group in groups and row.side in sides and row.best is not None]
    if not found:
        return None
    rate, name = max(found)
    return name, rate


def print_targets(rows: list[Row]) -> None:
    """Issue 3's targets, each from the rows above: ours against the best peer (or the raw ceiling)."""
    print("| target | ours | compared with | ratio | met |\n| --- | --- | --- | ---: | --- |")

    def line(
        target: str,
        ours: tuple[str, float] | None,
        other: tuple[str, float] | None,
        needed: float,
        server: tuple[str, float] | None = None,
    ) -> None:
        if ours is None or other is None:
            print(f"| {target} | n/a | n/a | n/a | n/a |")
            return
        ratio = ours[1] / other[1]
        verdict = "yes" if ratio >= needed else "no"
        if verdict == "no" and server is not None and other[1] * needed > server[1]:
            verdict = (
                f"no: out of reach on this server, whose fastest row ({server[0]}: {server[1]:,.0f}) is "
                f"{server[1] / other[1]:.2f}x the best peer"
            )
        print(f"| {target} | {ours[0]}: {ours[1]:,.0f} | {other[0]}: {other[1]:,.0f} | {ratio:.2f}x | {verdict} |")

    everyone = ("ours", "peer", "raw")
    for group in PRODUCER_GROUPS:
        line(
            f"{group} >= 2x best peer",
            fastest(rows, (group,), "ours"),
            fastest(rows, (group,), "peer"),
            2.0,
            fastest(rows, (group,), *everyone),
        )
    line(
        "producer, any mode >= 2x best peer",
        fastest(rows, PRODUCER_GROUPS, "ours"),
        fastest(rows, PRODUCER_GROUPS, "peer"),
        2.0,
        fastest(rows, PRODUCER_GROUPS, *everyone),
    )
    worker = fastest(rows, (WORKER,), "ours")
    line("worker >= 3x best peer", worker, fastest(rows, (WORKER,), "peer"), 3.0)
    ceiling = [(row.name, row.best) for row in rows if row.note == CEILING and row.best is not None]
    line("worker >= 80% of raw FETCH + ACK, 1 conn", worker, ceiling[0] if ceiling else None, 0.8)


if __name__ == "__main__":
    main()
