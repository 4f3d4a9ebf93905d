"""The worker's heartbeat: :class:`Heartbeat` sends BEAT on a connection and thread of its own.

Every BEAT carries the worker's ``current_state`` (so a quiet the worker entered on its own reaches the server)
and its resident memory in ``rss_kb``, read from ``/proc/self/status`` on Linux. The server's answer
``{"state":"quiet"}`` or ``{"state":"terminate"}`` (repeated on every BEAT once set) calls the worker back.
Jobs and FETCHes never share this connection, so neither a busy worker nor an empty FETCH delays a BEAT. On
``-ERR unknown worker`` (the server reaped the worker) the heartbeat reconnects, which registers the wid again.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

from celery_faktory.client.connection import Connection, expect_text
from celery_faktory.errors import FaktoryConnectionError, MalformedReply, ServerError
from celery_faktory.protocol import commands
from celery_faktory.protocol.encoding import loads
from celery_faktory.protocol.replies import Error
from celery_faktory.worker.backoff import Backoff

__all__ = ["Heartbeat", "rss_kb"]

log = logging.getLogger(__name__)

_PROC_STATUS = "/proc/self/status"
#: Seconds :meth:`Heartbeat.stop` waits for a BEAT in flight.
STOP_TIMEOUT = 15.0


def rss_kb() -> int | None:
    """The resident set size of this process in KiB, or ``None`` where it cannot be read.

    Linux: the current ``VmRSS`` of ``/proc/self/status``. Elsewhere: the peak RSS from
    :func:`resource.getrusage` (bytes on macOS, KiB on other systems).
    """
    current = _proc_rss_kb()
    if current is not None:
        return current
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else int(peak)


def _proc_rss_kb() -> int | None:
    try:
        with open(_PROC_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])  # "VmRSS:\t   54176 kB"
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or a format we do not know
    return None


class Heartbeat:
    """BEAT every ``interval`` seconds from the ``faktory-heartbeat`` thread.

    Args:
        connect: Opens a new connection carrying the worker's wid.
        wid: The worker id.
        interval: Seconds between BEATs.
        state: Returns the state the worker is in on its own: ``running``, ``quiet`` or ``terminate``.
        on_quiet: Called when the server says ``quiet``.
        on_terminate: Called when the server says ``terminate``.

    Attributes:
        beats: BEATs the server accepted.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        *,
        wid: str,
        interval: float,
        state: Callable[[], str],
        on_quiet: Callable[[], object],
        on_terminate: Callable[[], object],
        name: str = "faktory-heartbeat",
    ) -> None:
        self.wid = wid
        self.interval = interval
        self.beats = 0
        self._connect = connect
        self._state = state
        self._on_quiet = on_quiet
        self._on_terminate = on_terminate
        self._connection: Connection | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Connect and BEAT once in the calling thread, then go on beating in the thread.

        A bad URL or password therefore raises here.

        Raises:
            FaktoryConnectionError: The server cannot be reached or refused the handshake.
            ServerError: The server refused the first BEAT.
        """
        self._connection = self._connect()
        self._beat()
        self._thread.start()

    def wake(self) -> None:
        """BEAT now instead of at the end of the interval (to report a new state at once)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop beating and close the connection (END)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_TIMEOUT)
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _run(self) -> None:
        backoff = Backoff()
        delay = self.interval
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._beat()
            except (FaktoryConnectionError, MalformedReply, ServerError) as exc:
                self._drop_connection()
                delay = min(backoff.next_delay(), self.interval)
                log.warning("heartbeat of worker %s failed (%s); retrying in %.1f s", self.wid, exc, delay)
            else:
                backoff.reset()
                delay = self.interval

    def _beat(self) -> None:
        if self._connection is None or self._connection.broken:
            self._connection = self._connect()
        state = self._state()
        reply = self._connection.request(commands.beat(self.wid, current_state=state, rss_kb=rss_kb()))
        if isinstance(reply, Error) and reply.message.startswith("unknown worker"):
            log.warning("the server forgot worker %s (%s); reconnecting to register it again", self.wid, reply.message)
            self._drop_connection()
            self._connection = self._connect()
            reply = self._connection.request(commands.beat(self.wid, current_state=state, rss_kb=rss_kb()))
        text = expect_text(reply)
        self.beats += 1
        if text is None or text == "OK":
            return
        answer = loads(text)
        server_state = answer.get("state") if isinstance(answer, dict) else None
        if server_state == "quiet":
            self._on_quiet()
        elif server_state == "terminate":
            self._on_terminate()
        else:
            log.warning("unexpected BEAT reply %r", text)

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
