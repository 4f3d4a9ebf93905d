"""Fixtures for the interop tests against the reference Node client (npm ``faktory-worker`` 4.x).

``node_client`` installs the package once per session into a temporary directory and runs JS scripts there:
``node_client.run(source)`` waits for the script to end, ``node_client.start(source)`` returns a
:class:`NodeProcess` the test can talk to while it runs. Scripts print one JSON object per line on stdout.

The tests skip when ``node`` or ``npm`` is not on PATH. When ``npm install`` fails for another reason they skip
with npm's output as the reason, except under ``CI=true`` (or ``CI=1``), where they fail.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from celery_faktory.protocol import Simple, commands
from celery_faktory.server import FaktoryServer
from tests.faktory.wire import connect, unique

#: The npm package and version range under test.
NODE_PACKAGE = "faktory-worker@4"
NPM_INSTALL_TIMEOUT = 180.0

#: Put in front of every script: ``emit(object)`` prints one JSON line; ``fail(error)`` reports and exits 2.
PRELUDE = """\
import faktory from "faktory-worker";
const emit = (object) => process.stdout.write(JSON.stringify(object) + "\\n");
const env = (name) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const failScript = (error) => {
  emit({ event: "script-error", message: String(error && error.message || error) });
  process.exit(2);
};
process.on("unhandledRejection", failScript);
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class NodeProcess:
    """A running ``node script.mjs``: its JSON stdout lines arrive on a reader thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.events: list[dict[str, Any]] = []
        self.raw_stdout: list[str] = []
        self.stderr: list[str] = []
        self._incoming: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.raw_stdout.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._incoming.put(event)
        self._incoming.put(None)

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)

    def _drain(self, timeout: float) -> bool:
        """Move arrived events to ``events``; False once stdout has ended."""
        try:
            event = self._incoming.get(timeout=timeout)
        except queue.Empty:
            return True
        if event is None:
            self._incoming.put(None)  # stay at end of stream for later callers
            return False
        self.events.append(event)
        return True

    def output(self) -> str:
        """Everything the script printed, for assertion messages."""
        return f"exit code {self.popen.poll()}\nstdout:\n{''.join(self.raw_stdout)}\nstderr:\n{''.join(self.stderr)}"

    def expect(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first event (already seen or arriving within ``timeout`` s) that matches ``predicate``."""
        return self.expect_after(0, predicate, timeout)

    def expect_after(
        self, start: int, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Like :meth:`expect`, among the events from index ``start`` on."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = max(seen, len(self.events))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event from the Node script within {timeout} s\n{self.output()}")
            if not self._drain(min(remaining, 0.05)) and len(self.events) == seen:
                raise AssertionError(f"the Node script ended without a matching event\n{self.output()}")

    def settle(self, seconds: float) -> None:
        """Collect events for ``seconds`` seconds."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._drain(min(remaining, 0.05)):
                time.sleep(remaining)
                return

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the script to exit (killing it after ``timeout`` s) and collect all of its output."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the Node script did not exit within {timeout} s\n{self.output()}") from None
        for thread in self._threads:
            thread.join(timeout=5)
        while self._drain(0):
            pass
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


class NodeClient:
    """Runs JS scripts next to an installed ``faktory-worker``."""

    def __init__(self, directory: Path, node: str, version: str) -> None:
        self.directory = directory
        self.node = node
        self.version = version
        self._processes: list[NodeProcess] = []

    def _environment(self, url: str, extra: dict[str, str] | None) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("FAKTORY_")}
        env["FAKTORY_URL"] = url
        env.update(extra or {})
        return env

    def start(self, source: str, *, url: str, env: dict[str, str] | None = None) -> NodeProcess:
        """Write ``source`` (after the prelude) to a fresh .mjs file and start it with FAKTORY_URL=``url``."""
        script = self.directory / f"script-{uuid.uuid4().hex[:12]}.mjs"
        script.write_text(PRELUDE + source, encoding="utf-8")
        process = NodeProcess([self.node, str(script)], self.directory, self._environment(url, env))
        self._processes.append(process)
        return process

    def run(
        self, source: str, *, url: str, env: dict[str, str] | None = None, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Run a script to its end; assert it exits with 0 and return its JSON events."""
        process = self.start(source, url=url, env=env)
        code = process.wait(timeout)
        assert code == 0, process.output()
        errors = [event for event in process.events if event.get("event") == "script-error"]
        assert not errors, process.output()
        return process.events

    def kill_all(self) -> None:
        for process in self._processes:
            process.kill()
        self._processes.clear()


@pytest.fixture(scope="session")
def node_install_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A directory with ``faktory-worker@4`` installed by npm; (directory, node binary, installed version)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Node client interop tests")
    directory = tmp_path_factory.mktemp("node-faktory")
    (directory / "package.json").write_text(
        json.dumps({"name": "celery-faktory-interop", "version": "0.0.0", "private": True}), encoding="utf-8"
    )
    command = [npm, "install", "--no-audit", "--no-fund", NODE_PACKAGE]
    try:
        result = subprocess.run(
            command, cwd=directory, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        _unavailable(f"{' '.join(command)} timed out after {NPM_INSTALL_TIMEOUT:.0f} s: {exc.stdout!r} {exc.stderr!r}")
    except OSError as exc:
        _unavailable(f"{' '.join(command)} could not run: {exc}")
    if result.returncode != 0:
        _unavailable(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    manifest = directory / "node_modules" / "faktory-worker" / "package.json"
    version = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    assert version.startswith("4."), f"npm installed faktory-worker {version}, not 4.x"
    return directory, node, version


@pytest.fixture
def node_client(node_install_dir: tuple[Path, str, str]) -> Iterator[NodeClient]:
    """Run Node scripts against faktory-worker 4.x; any script still running at teardown is killed."""
    client = NodeClient(*node_install_dir)
    yield client
    client.kill_all()


@pytest.fixture
def own_server(request: pytest.FixtureRequest) -> FaktoryServer | None:
    """The session's in-process server, or None when FAKTORY_URL points at a real Faktory."""
    if os.environ.get("FAKTORY_URL"):
        return None
    return request.getfixturevalue("faktory_server")


@pytest.fixture
def interop_queue(faktory_url: str) -> Iterator[str]:
    """A unique queue name on ``faktory_url``'s server, removed (with its jobs) after the test."""
    name = unique("node")
    yield name
    with connect(faktory_url) as conn:
        assert conn.command(commands.queue_remove(name)) == Simple("OK")
