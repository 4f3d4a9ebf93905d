"""The producer-side :class:`Client`: every Faktory command over a pool of connections.

Commands that are safe to repeat (PUSH of the same jid, ACK, FAIL, BEAT, INFO, QUEUE LATENCY) are retried on a
fresh connection with backoff when a connection dies under them; the others raise at once. ``-ERR`` replies
raise :class:`~celery_faktory.errors.ServerError` subclasses carrying the server's text.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from celery_faktory.client.connection import Connection, expect_ok, expect_text
from celery_faktory.client.fanout import Batch, fan_out
from celery_faktory.client.pool import ConnectionPool
from celery_faktory.config import ClientConfig
from celery_faktory.errors import FaktoryConnectionError, HandshakeError, InvalidCommand, MalformedReply, PoolExhausted
from celery_faktory.job import Job
from celery_faktory.protocol import commands
from celery_faktory.protocol.encoding import loads
from celery_faktory.protocol.replies import Error, Reply

__all__ = ["Client", "SortedSet"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_K = TypeVar("_K")

#: Jobs per PUSHB command (upstream advice: about 1000).
PUSH_BULK_CHUNK = 1000


class SortedSet:
    """MUTATE on one of the server's sets: ``client.retries``, ``client.scheduled`` or ``client.dead``.

    Each method takes an optional filter: ``jids`` (exact job ids), ``regexp`` (a Redis glob matched against
    the job's JSON, e.g. ``"*SendEmail*"``) and ``jobtype``. No filter means every job in the set.
    """

    def __init__(self, client: Client, target: str) -> None:
        self._client = client
        self.target = target

    def clear(self) -> None:
        """Delete every job in the set."""
        self._client.mutate("clear", self.target)

    def discard(self, *, jids: Sequence[str] = (), regexp: str | None = None, jobtype: str | None = None) -> None:
        """Delete the matching jobs."""
        self._client.mutate("discard", self.target, _filter(jids, regexp, jobtype))

    def kill(self, *, jids: Sequence[str] = (), regexp: str | None = None, jobtype: str | None = None) -> None:
        """Move the matching jobs to the dead set."""
        self._client.mutate("kill", self.target, _filter(jids, regexp, jobtype))

    def requeue(self, *, jids: Sequence[str] = (), regexp: str | None = None, jobtype: str | None = None) -> None:
        """Push the matching jobs back onto their queues now."""
        self._client.mutate("requeue", self.target, _filter(jids, regexp, jobtype))


def _filter(jids: Sequence[str], regexp: str | None, jobtype: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if isinstance(jids, str):
        jids = [jids]
    if jids:
        result["jids"] = list(jids)
    if regexp:
        result["regexp"] = regexp
    if jobtype:
        result["jobtype"] = jobtype
    return result


class Client:
    """A thread-safe Faktory client.

    Args:
        url: ``tcp://[:password@]host[:port]`` or ``tcp+tls://...``; default from ``FAKTORY_PROVIDER`` /
            ``FAKTORY_URL``, else ``tcp://localhost:7419``.
        pool_size: The most connections open at once.
        max_retries: How many times a command that is safe to repeat is retried after a connection failure.
        config: A ready :class:`ClientConfig` (then ``url`` and the options are ignored).
        **options: Any :class:`ClientConfig` field (``host``, ``port``, ``password``, ``tls``, ``tls_verify``,
            ``tls_ca``, ``tls_cert``, ``tls_key``, ``connect_timeout``, ``read_timeout``, ``labels`` ...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        pool_size: int = 5,
        max_retries: int = 3,
        config: ClientConfig | None = None,
        **options: Any,
    ) -> None:
        self.config = config or ClientConfig.resolve(url, **options)
        self.max_retries = max_retries
        self._pool = ConnectionPool(lambda: Connection(self.config), pool_size)
        self.retries = SortedSet(self, "retries")
        self.scheduled = SortedSet(self, "scheduled")
        self.dead = SortedSet(self, "dead")

    # -- plumbing --------------------------------------------------------------------------------------

    def _run(self, action: Callable[[Connection], _T], *, retry: bool) -> _T:
        attempt = 0
        while True:
            try:
                connection = self._pool.acquire()
                try:
                    return action(connection)
                finally:
                    self._pool.release(connection)
            except (HandshakeError, PoolExhausted):
                raise
            except (FaktoryConnectionError, MalformedReply) as exc:
                if not retry or attempt >= self.max_retries:
                    raise
                delay = min(0.1 * 2**attempt, 2.0)
                attempt += 1
                log.warning("Faktory connection failed (%s); retry %d in %.1f s", exc, attempt, delay)
                time.sleep(delay)

    def request(self, line: bytes, *, retry: bool = False) -> Reply:
        """Send one command line (from :mod:`celery_faktory.protocol.commands`) and return the raw reply."""
        return self._run(lambda connection: connection.request(line), retry=retry)

    def _ok(self, line: bytes, *, retry: bool) -> None:
        expect_ok(self.request(line, retry=retry))

    # -- jobs ------------------------------------------------------------------------------------------

    def job(self, jobtype: str, *args: Any, **fields: Any) -> Job:
        """A :class:`Job` bound to this client: ``client.job("SendEmail", 42).push()``."""
        return Job(jobtype, args, client=self, **fields)

    def push(self, job: Job | Mapping[str, Any]) -> str:
        """PUSH one job; returns its jid. A mapping is sent as given (``retry`` added when missing)."""
        payload = _payload(job)
        self._ok(commands.push(payload), retry=True)
        return str(payload["jid"])

    def push_many(
        self, jobs: Iterable[Job | Mapping[str, Any]], *, window: int = 100, connections: int = 1
    ) -> dict[str, str]:
        """PUSH jobs one command each, pipelined ``window`` at a time.

        Unlike :meth:`push_bulk` every job is its own PUSH, so the server treats each exactly as :meth:`push`
        would; the round trips are shared. Returns the jids the server refused, with its reasons.

        Args:
            jobs: Jobs, or mappings shaped like PUSH payloads.
            window: PUSH commands per write.
            connections: Spread the windows over up to this many pooled connections, which the server works on
                in parallel; jobs of different windows may then be enqueued out of order. With 1 (the default)
                they go in order over one connection (a window sent again after a connection failure may land
                after the next one).
        """
        rejected: dict[str, str] = {}
        for jids, replies in self._pipelined(self._push_windows(jobs, window, rejected), connections):
            for jid, reply in zip(jids, replies, strict=True):
                if isinstance(reply, Error):
                    rejected[jid] = reply.message
                else:
                    expect_ok(reply)
        return rejected

    def _push_windows(
        self, jobs: Iterable[Job | Mapping[str, Any]], window: int, rejected: dict[str, str]
    ) -> Iterator[Batch[list[str]]]:
        """``(jids, PUSH lines)`` per window; jobs refused before sending go to ``rejected``."""
        for batch in _chunks(jobs, window):
            lines: list[bytes] = []
            pushed: list[str] = []
            for payload in batch:
                try:
                    lines.append(commands.push(payload))
                except InvalidCommand as exc:
                    rejected[str(payload.get("jid"))] = str(exc)
                else:
                    pushed.append(str(payload["jid"]))
            if lines:
                yield pushed, lines

    def _pipelined(self, batches: Iterable[Batch[_K]], connections: int) -> Iterator[tuple[_K, list[Reply]]]:
        """Each batch's replies, its lines pipelined in one write; sent again on a new connection after a failure.

        The batches are fanned out over up to ``connections`` pooled connections, each carrying the next batch
        while the server works on the one before, so building a batch costs no round trip.
        """
        with contextlib.closing(fan_out(self._pool, batches, width=max(1, connections))) as answers:
            for (key, lines), answer in answers:
                if isinstance(answer, list):
                    yield key, answer
                else:
                    log.warning("Faktory connection failed (%s); sending %d commands again", answer, len(lines))
                    yield key, self._run(_pipeline(lines), retry=True)

    def push_bulk(
        self,
        jobs: Iterable[Job | Mapping[str, Any]],
        *,
        chunk_size: int = PUSH_BULK_CHUNK,
        retry: bool = True,
        connections: int = 1,
    ) -> dict[str, str]:
        """PUSHB in chunks; returns the rejected jids with the server's reasons (empty when all went in).

        Args:
            jobs: Jobs, or mappings shaped like PUSH payloads.
            chunk_size: Jobs per PUSHB.
            retry: Send a chunk again on a fresh connection when the connection died under it (the server
                may then hold some jobs twice); ``False`` raises instead.
            connections: Send chunks over up to this many pooled connections at once, which the server works
                on in parallel; chunks may then be enqueued out of order. With 1 (the default) they go one
                after another, in order (a chunk sent again after a connection failure may land after the next).
        """
        rejected: dict[str, str] = {}
        lines = (line for chunk in _chunks(jobs, chunk_size) if (line := self._bulk_line(chunk, rejected)))
        batches = ((line, [line]) for line in lines)
        with contextlib.closing(fan_out(self._pool, batches, width=max(1, connections))) as answers:
            for (line, _), answer in answers:
                if isinstance(answer, list):
                    reply = answer[0]
                elif retry:
                    log.warning("Faktory connection failed (%s); sending a PUSHB again", answer)
                    reply = self.request(line, retry=True)
                else:
                    raise answer
                rejected.update(_bulk_result(reply))
        return rejected

    def _bulk_line(self, chunk: list[dict[str, Any]], rejected: dict[str, str]) -> bytes | None:
        """The PUSHB line of ``chunk``; jobs the server would refuse go to ``rejected`` (``None``: none left)."""
        try:
            return commands.push_bulk(chunk)
        except InvalidCommand:
            # Refuse the bad jobs here, in the server's own words, so that the rest still goes in.
            accepted = []
            for payload in chunk:
                problem = commands.job_error(payload)
                if problem is None:
                    accepted.append(payload)
                else:
                    rejected[str(payload.get("jid"))] = problem
            return commands.push_bulk(accepted) if accepted else None

    def fetch(self, queue: str, *queues: str) -> Job | None:
        """FETCH from the queues in order; ``None`` when nothing arrived within the server's block (2 s)."""
        reply = self.request(commands.fetch(queue, *queues))
        if not expect_text(reply):
            return None
        payload = _json_object(reply, "FETCH")
        try:
            return Job.from_dict(payload, client=self)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedReply(f"FETCH returned a job without {exc}: {payload!r}") from exc

    def ack(self, jid: str) -> None:
        """ACK: the job succeeded."""
        self._ok(commands.ack(jid), retry=True)

    def fail(
        self,
        jid: str,
        error: BaseException | str,
        *,
        errtype: str | None = None,
        backtrace: Sequence[str] | None = None,
    ) -> None:
        """FAIL: the job failed; the server retries it, kills it or drops it by its ``retry``.

        Args:
            jid: The job.
            error: The exception (its class name becomes ``errtype``, its traceback the backtrace) or a message.
            errtype: Overrides the error type.
            backtrace: Overrides the backtrace lines.
        """
        if isinstance(error, BaseException):
            message = str(error) or type(error).__name__
            errtype = errtype or type(error).__name__
            if backtrace is None and error.__traceback__ is not None:
                backtrace = [line.rstrip() for line in traceback.format_tb(error.__traceback__)]
        else:
            message = error
        line = commands.fail(jid, errtype=errtype or "unknown", message=message, backtrace=backtrace)
        self._ok(line, retry=True)

    # -- server state ----------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The server's INFO document."""
        return _json_object(self.request(commands.info(), retry=True), "INFO")

    def queue_sizes(self) -> dict[str, int]:
        """The number of jobs in each queue the server knows."""
        return dict(self.info()["faktory"]["queues"])

    def flush(self) -> None:
        """FLUSH: delete every job, set and counter on the server."""
        self._ok(commands.flush(), retry=False)

    def queue_pause(self, queue: str, *queues: str) -> None:
        """Pause queues (``"*"`` for all): FETCH skips them, their jobs stay."""
        self._ok(commands.queue_pause(queue, *queues), retry=True)

    def queue_resume(self, queue: str, *queues: str) -> None:
        """Resume paused queues (``"*"`` for all)."""
        self._ok(commands.queue_resume(queue, *queues), retry=True)

    def queue_remove(self, queue: str, *queues: str) -> None:
        """Delete queues and all their jobs (``"*"`` for all)."""
        self._ok(commands.queue_remove(queue, *queues), retry=True)

    def queue_latency(self, queue: str, *queues: str) -> dict[str, float]:
        """Seconds since the oldest job of each queue was enqueued (0 for an empty queue)."""
        result = _json_object(self.request(commands.queue_latency(queue, *queues), retry=True), "QUEUE LATENCY")
        try:
            return {str(name): float(value) for name, value in result.items()}
        except (TypeError, ValueError) as exc:
            raise MalformedReply(f"QUEUE LATENCY answered {result!r}") from exc

    def mutate(self, cmd: str, target: str, filter: Mapping[str, Any] | None = None) -> None:  # noqa: A002
        """MUTATE the retries, scheduled or dead set; :class:`SortedSet` is the friendlier form."""
        self._ok(commands.mutate(cmd, target, filter), retry=cmd != "requeue")

    # -- lifecycle -------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Open a connection now, handshake included, so that a wrong address or password shows at once."""
        self._pool.release(self._pool.acquire())

    def close(self) -> None:
        """Close every idle connection (END, then close)."""
        self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.config.safe_url}>"


def _pipeline(lines: Sequence[bytes]) -> Callable[[Connection], list[Reply]]:
    """What :meth:`Client._run` runs to send ``lines`` in one write and read their replies."""
    return lambda connection: connection.pipeline(lines)


def _bulk_result(reply: Reply) -> dict[str, str]:
    """The rejected jids and reasons a PUSHB reply carries."""
    return {str(jid): str(reason) for jid, reason in _json_object(reply, "PUSHB").items()}


def _json_object(reply: Reply, verb: str) -> dict[str, Any]:
    """The JSON object a bulk reply carries; :class:`MalformedReply` for anything else."""
    text = expect_text(reply)
    try:
        result = loads(text or "")
    except ValueError as exc:
        raise MalformedReply(f"{verb} answered with something that is not JSON: {text!r:.200}") from exc
    if not isinstance(result, dict):
        raise MalformedReply(f"{verb} answered with JSON that is not an object: {text!r:.200}")
    return result


def _payload(job: Job | Mapping[str, Any]) -> dict[str, Any]:
    """The PUSH payload of a :class:`Job`, or of a mapping (``retry`` added when it has none)."""
    return job.to_dict() if isinstance(job, Job) else {"retry": 25, **job}


def _chunks(jobs: Iterable[Job | Mapping[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Payloads in lists of ``size`` (the last one shorter)."""
    chunk: list[dict[str, Any]] = []
    for job in jobs:
        chunk.append(_payload(job))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
