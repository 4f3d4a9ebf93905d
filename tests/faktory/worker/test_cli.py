"""The command line, with the worker in a subprocess: signals, exit codes, logging, --help."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celery_faktory import Client
from tests.faktory.wire import wait_until
from tests.faktory.worker.support import holds, push, queue_size

ROOT = Path(__file__).resolve().parents[3]

posix_only = pytest.mark.skipif(not hasattr(signal, "SIGTSTP"), reason="needs POSIX signals")


class WorkerProcess:
    """``python -m celery_faktory.worker`` in a subprocess, its stderr collected line by line."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "FAKTORY_URL": url, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "celery_faktory.worker", "-r", "tests.faktory.worker.cli_jobs", *args]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        try:
            wait_until(lambda: text in self.output or self.process.poll() is not None, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.output}") from None
        assert text in self.output, f"the worker exited before logging {text!r}:\n{self.output}"

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def exit_code(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def start_worker(faktory_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    processes: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        process = WorkerProcess(faktory_url, *args)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


@posix_only
def test_sigtstp_quiets_the_worker_and_sigint_stops_it(
    start_worker: Callable[..., WorkerProcess], client: Client, queue: str
) -> None:
    worker = start_worker("-q", queue, "-c", "2", "--beat-interval", "0.5", "--shutdown-timeout", "1")
    worker.wait_for("started on")
    push(client, queue, "cli_record", "before")
    worker.wait_for("cli_record ran")
    worker.signal(signal.SIGTSTP)
    worker.wait_for("SIGTSTP: going quiet")
    worker.wait_for("fetching stopped")
    push(client, queue, "cli_record", "after")
    assert holds(lambda: queue_size(client, queue) == 1, 1.0)  # nobody fetches it
    assert worker.process.poll() is None  # quiet alone never exits
    worker.signal(signal.SIGINT)
    assert worker.exit_code(timeout=10) == 0
    assert "worker" in worker.output
    assert "stopped" in worker.output
    assert queue_size(client, queue) == 1


@posix_only
def test_sigterm_fails_the_in_flight_job_and_exits_zero(
    start_worker: Callable[..., WorkerProcess], client: Client, queue: str
) -> None:
    shutdown_timeout = 1.0
    worker = start_worker("-q", queue, "--shutdown-timeout", str(shutdown_timeout), "--beat-interval", "0.5")
    worker.wait_for("started on")
    jid = push(client, queue, "cli_sleep", 60)
    worker.wait_for(f"cli_sleep started {jid}")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.exit_code(timeout=shutdown_timeout + 8) == 0
    # The timeout, at most one FETCH block (2 s on Faktory), the flush, the interpreter's exit.
    assert time.monotonic() - started < shutdown_timeout + 5
    assert f"job cli_sleep {jid} did not finish within 1 s; cancelling and FAILing it" in worker.output
    assert "exiting with 1 job threads still running" in worker.output
    # The FAIL put it in the retry set at once (not reserved until it expires): requeueing it finds it there.
    assert queue_size(client, queue) == 0
    client.retries.requeue(jids=[jid])
    wait_until(lambda: queue_size(client, queue) == 1)


def test_an_unreachable_server_exits_with_an_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery_faktory.worker", "--url", "tcp://127.0.0.1:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot connect to Faktory at tcp://127.0.0.1:1" in result.stderr


def test_an_unimportable_module_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery_faktory.worker", "-r", "no_such_module_here"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot import no_such_module_here" in result.stderr


def test_help_documents_the_queue_convention() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery_faktory.worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "'-q critical,default' drains critical first" in text
    assert "'-q critical:3 -q default:1'" in text
    assert "weighted random order" in text
