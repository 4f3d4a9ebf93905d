"""``celery faktory server`` and ``celery faktory info``: the subcommands the package adds to Celery's CLI.

They run through the ``celery`` command itself (a subprocess), so these tests also check the ``celery.commands``
entry point that makes ``celery -A proj worker`` know ``faktory://`` without an import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_faktory import Client, Job
from tests.faktory.brokers import broker_url
from tests.faktory.transport.conftest import dead_port
from tests.faktory.wire import RawConnection, connect, unique, wait_until

REPO = Path(__file__).resolve().parents[2]


def celery(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **environ}
    env.pop("FAKTORY_URL", None)
    env.pop("FAKTORY_PROVIDER", None)
    return subprocess.run(
        [sys.executable, "-m", "celery", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def queue(faktory_url: str) -> Iterator[str]:
    name = unique("cli")
    with Client(faktory_url) as client:
        client.push(Job("Report", [1], queue=name))
        client.push(Job("Report", [2], queue=name))
    yield name
    with Client(faktory_url) as client:
        client.queue_remove(name)


def test_info_prints_the_version_and_queue_sizes(faktory_url: str, queue: str) -> None:
    result = celery("faktory", "info", "--url", faktory_url)
    assert result.returncode == 0, result.stderr
    first, *rows = result.stdout.splitlines()
    assert first.endswith("Faktory 1.9.4")
    assert f"         2  {queue}" in rows


def test_info_uses_the_apps_faktory_broker(faktory_url: str, queue: str) -> None:
    result = celery("-A", "tests.faktory.cli_app", "faktory", "info", CLI_TEST_BROKER_URL=broker_url(faktory_url))
    assert result.returncode == 0, result.stderr
    assert f"         2  {queue}" in result.stdout.splitlines()


def test_info_reports_an_unreachable_server() -> None:
    result = celery("faktory", "info", "--url", f"tcp://127.0.0.1:{dead_port()}")
    assert result.returncode == 1
    assert "Error: cannot connect to Faktory at tcp://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_subcommand_serves_until_sigterm() -> None:
    port = dead_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "celery", "faktory", "server", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        raw = wait_until(lambda: _connect(f"tcp://127.0.0.1:{port}"), timeout=20)
        raw.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def _connect(url: str) -> RawConnection | None:
    try:
        return connect(url)
    except OSError:
        return None
