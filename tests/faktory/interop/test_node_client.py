"""Interop with the reference Node client, npm ``faktory-worker`` 4.x (faktory_worker_node).

Each test runs a small ES-module script with ``node`` (see ``conftest.py``) against our server, or against a real
Faktory when ``FAKTORY_URL`` is set, and checks the other side with a raw Python connection or with the server's
controls. Scripts print one JSON object per line.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_faktory.protocol import Bulk, Error, Simple, commands, loads
from celery_faktory.server import FaktoryServer
from tests.faktory.interop.conftest import NodeClient, NodeProcess
from tests.faktory.wire import RawConnection, connect, unique, wait_until

# -- JS scripts (the prelude from conftest.py, with ``faktory``, ``emit`` and ``env``, goes in front) ----------

PUSH_SCRIPT = """
const queue = env("INTEROP_QUEUE");
const client = await faktory.connect();

const single = client.job("NodeInteropSingle", 1, "two", { three: [3, 3.5] }, null, true);
single.queue = queue;
single.custom = { tenant: "acme", trace: { id: "abc-123", depth: 2 } };
single.reserveFor = 120;
const jid = await single.push();
emit({ event: "pushed", jid, payload: single.toJSON() });

const bulk = [0, 1, 2].map((i) => {
  const job = client.job("NodeInteropBulk", i, `item-${i}`);
  job.queue = queue;
  job.custom = { index: i };
  return job;
});
const rejected = await client.pushBulk(bulk);
emit({ event: "bulk", rejected, payloads: bulk.map((job) => job.toJSON()) });
await client.close();
"""

WORK_SCRIPT = """
const queue = env("INTEROP_QUEUE");
const expected = Number(env("INTEROP_COUNT"));
let seen = 0;
let inFlight = 0;
let maxInFlight = 0;
let allSeen;
const done = new Promise((resolve) => { allSeen = resolve; });

faktory.register("PythonToNode", (...args) => async ({ job }) => {
  inFlight += 1;
  maxInFlight = Math.max(maxInFlight, inFlight);
  await new Promise((resolve) => setTimeout(resolve, 20));
  inFlight -= 1;
  emit({ event: "job", jid: job.jid, jobtype: job.jobtype, queue: job.queue, args, custom: job.custom ?? null,
         retry: job.retry });
  seen += 1;
  if (seen === expected) allSeen();
});

const worker = await faktory.work({ queues: [queue], concurrency: 5 });
worker.on("fail", ({ job, error }) => emit({ event: "fail", jid: job.jid, message: error.message }));
emit({ event: "working", wid: worker.wid });
await done;
await worker.stop();
emit({ event: "stopped", maxInFlight });
"""

THROW_SCRIPT = """
const queue = env("INTEROP_QUEUE");
const message = env("INTEROP_MESSAGE");
let failures = 0;
let allFailed;
const done = new Promise((resolve) => { allFailed = resolve; });

faktory.register("NodeThrows", () => { throw new Error(message); });

const worker = await faktory.work({ queues: [queue], concurrency: 2 });
worker.on("fail", ({ job, error }) => {
  emit({ event: "fail", jid: job.jid, jobtype: job.jobtype, message: error.message });
  failures += 1;
  if (failures === 2) allFailed();
});
await done;
await worker.stop();
emit({ event: "stopped" });
"""

QUIET_SCRIPT = """
const queue = env("INTEROP_QUEUE");
faktory.register("NodeQuietJob", (...args) => async ({ job }) => emit({ event: "job", jid: job.jid }));

const worker = new faktory.Worker({
  wid: env("INTEROP_WID"),
  queues: [queue],
  concurrency: 2,
  beatInterval: 0.2,
  labels: ["node", env("INTEROP_LABEL")],
  registry: faktory.registry,
});

// Instrument the worker (it calls these through `this`) so the test sees every BEAT, FETCH and state change.
const clientBeat = worker.client.beat.bind(worker.client);
worker.client.beat = async () => {
  const state = await clientBeat();
  emit({ event: "beat", state });
  return state;
};
const fetch = worker.fetch.bind(worker);
worker.fetch = async () => {
  emit({ event: "fetch-start" });
  const job = await fetch();
  emit({ event: "fetch-end", jid: job ? job.jid : null });
  return job;
};
const quiet = worker.quiet.bind(worker);
worker.quiet = () => { emit({ event: "quiet" }); quiet(); };
const stop = worker.stop.bind(worker);
worker.stop = async () => {
  emit({ event: "stopping" });
  await stop();
  emit({ event: "stopped" });
};

await worker.work();
emit({ event: "working", wid: worker.wid, pid: process.pid });
"""

PASSWORD_SCRIPT = """
const queue = env("INTEROP_QUEUE");
const client = await faktory.connect();
const job = client.job("NodePasswordJob", "secret-ok");
job.queue = queue;
emit({ event: "pushed", jid: await job.push() });
await client.close();

for (const [name, url] of [["wrong", env("INTEROP_WRONG_URL")], ["missing", env("INTEROP_NO_PASSWORD_URL")]]) {
  try {
    const other = await faktory.connect({ url });
    await other.close();
    emit({ event: "accepted", name });
  } catch (error) {
    emit({ event: "rejected", name, message: String(error && error.message) });
  }
}
"""

ROUNDTRIP_SCRIPT = """
const queue = env("INTEROP_QUEUE");
const client = await faktory.connect();
const pushed = [];
const first = client.job("NodeRoundTrip", 0, "single");
first.queue = queue;
pushed.push(await first.push());
const bulk = [1, 2, 3].map((i) => {
  const job = client.job("NodeRoundTrip", i, "bulk");
  job.queue = queue;
  return job;
});
const rejected = await client.pushBulk(bulk);
pushed.push(...bulk.map((job) => job.jid));
emit({ event: "pushed", jids: pushed, rejected });
await client.close();

let allSeen;
const done = new Promise((resolve) => { allSeen = resolve; });
let seen = 0;
faktory.register("NodeRoundTrip", (...args) => async ({ job }) => {
  emit({ event: "job", jid: job.jid, args });
  seen += 1;
  if (seen === pushed.length) allSeen();
});
const worker = await faktory.work({ queues: [queue], concurrency: 3 });
await done;
await worker.stop();
emit({ event: "stopped" });
"""


# -- helpers ------------------------------------------------------------------------------------------------


def _events(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event.get("event") == name]


def _push(conn: RawConnection, job: dict[str, Any]) -> None:
    assert conn.command(commands.push(job)) == Simple("OK")


def _fetch(conn: RawConnection, queue: str) -> dict[str, Any]:
    reply = conn.command(commands.fetch(queue))
    assert isinstance(reply, Bulk), reply
    assert reply.value is not None, f"queue {queue} is empty"
    return loads(reply.value)


def _assert_not_reserved(url: str, jids: list[str]) -> None:
    """FAIL of a jid nobody holds is ``-ERR Job not found <jid>`` on every Faktory: no reservation is left."""
    with connect(url) as conn:
        for jid in jids:
            reply = conn.command(commands.fail(jid, errtype="Interop", message="reservation check"))
            assert reply == Error("ERR", f"Job not found {jid}"), (jid, reply)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _cli_server(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m celery_faktory.server --port <port>``, killed at the end if still running."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery_faktory.server", "--port", str(port)], stdout=output, stderr=output
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _greets(url: str) -> bool:
    try:
        with contextlib.closing(RawConnection(url, timeout=1.0)) as conn:
            return conn.greeting().text.startswith("HI ")
    except OSError:
        return False


# -- tests --------------------------------------------------------------------------------------------------


def test_node_pushes_arrive_as_sent(node_client: NodeClient, faktory_url: str, interop_queue: str) -> None:
    events = node_client.run(PUSH_SCRIPT, url=faktory_url, env={"INTEROP_QUEUE": interop_queue})
    (pushed,) = _events(events, "pushed")
    (bulk,) = _events(events, "bulk")
    assert bulk["rejected"] == {}
    sent = [pushed["payload"], *bulk["payloads"]]
    assert pushed["jid"] == sent[0]["jid"]
    assert len({payload["jid"] for payload in sent}) == 4

    with connect(faktory_url) as conn:
        for payload in sent:  # a queue is FIFO: the single push first, then the bulk in order
            job = _fetch(conn, interop_queue)
            assert job["jid"] == payload["jid"]
            assert job["jobtype"] == payload["jobtype"]
            assert job["args"] == payload["args"]
            assert job["custom"] == payload["custom"]
            assert job["queue"] == interop_queue
            assert job["retry"] == 25
            assert job.get("reserve_for") == payload.get("reserve_for")
            # Node also sends priority 5; Faktory drops that unknown field and adds its timestamps.
            assert set(job) == (set(payload) - {"priority"}) | {"created_at", "enqueued_at"}
            assert job["created_at"]
            assert job["enqueued_at"]
            assert conn.command(commands.ack(job["jid"])) == Simple("OK")
        first = sent[0]
    assert first["args"] == [1, "two", {"three": [3, 3.5]}, None, True]
    assert first["custom"] == {"tenant": "acme", "trace": {"id": "abc-123", "depth": 2}}
    assert first["reserve_for"] == 120


def test_node_worker_processes_python_pushes(
    node_client: NodeClient, faktory_url: str, interop_queue: str, own_server: FaktoryServer | None
) -> None:
    count = 20
    jobs = [
        {
            "jid": unique("py"),
            "jobtype": "PythonToNode",
            "queue": interop_queue,
            "args": [index, f"payload-{index}", {"nested": [index, "ü"]}],
            "custom": {"origin": "python", "index": index},
            "retry": 3,
        }
        for index in range(count)
    ]
    with connect(faktory_url) as conn:
        for job in jobs:
            _push(conn, job)

    events = node_client.run(
        WORK_SCRIPT, url=faktory_url, env={"INTEROP_QUEUE": interop_queue, "INTEROP_COUNT": str(count)}, timeout=30
    )
    seen = _events(events, "job")
    assert not _events(events, "fail")
    assert collections.Counter(event["jid"] for event in seen) == collections.Counter(job["jid"] for job in jobs)
    by_jid = {event["jid"]: event for event in seen}
    for job in jobs:
        event = by_jid[job["jid"]]
        assert (event["jobtype"], event["queue"], event["args"], event["custom"], event["retry"]) == (
            job["jobtype"],
            job["queue"],
            job["args"],
            job["custom"],
            job["retry"],
        )
    (stopped,) = _events(events, "stopped")
    assert 1 <= stopped["maxInFlight"] <= 5

    jids = [job["jid"] for job in jobs]
    if own_server is not None:
        assert [job for job in own_server.jobs("working") if job["jid"] in jids] == []
        assert own_server.queue(interop_queue) == []
    _assert_not_reserved(faktory_url, jids)


@pytest.mark.faktory_server_only
def test_node_job_that_throws_lands_in_retries(
    node_client: NodeClient, faktory_server: FaktoryServer, interop_queue: str
) -> None:
    message = f"boom from node {unique('msg')}"
    throws = {"jid": unique("throw"), "jobtype": "NodeThrows", "queue": interop_queue, "args": [1], "retry": 3}
    unknown = {"jid": unique("unk"), "jobtype": "NodeUnregistered", "queue": interop_queue, "args": [], "retry": 3}
    with connect(faktory_server.url) as conn:
        _push(conn, throws)
        _push(conn, unknown)
    try:
        events = node_client.run(
            THROW_SCRIPT, url=faktory_server.url, env={"INTEROP_QUEUE": interop_queue, "INTEROP_MESSAGE": message}
        )
        assert {event["jid"] for event in _events(events, "fail")} == {throws["jid"], unknown["jid"]}

        retries = {job["jid"]: job for job in faktory_server.jobs("retries")}
        expected_messages = {throws["jid"]: message, unknown["jid"]: "No jobtype registered: NodeUnregistered"}
        for jid, expected_message in expected_messages.items():
            assert jid in retries, f"{jid} is not in the retries set"
            failure = retries[jid]["failure"]
            assert failure["message"] == expected_message
            assert failure["errtype"] == "undefined"  # Node sends String(error.code)
            assert failure["retry_count"] == 0
            assert failure["remaining"] == 3
            assert failure["next_at"]
            backtrace = failure["backtrace"]
            assert isinstance(backtrace, list)
            assert 1 <= len(backtrace) <= 50
            assert backtrace[0] == f"Error: {expected_message}"
        assert [job for job in faktory_server.jobs("working") if job["jid"] in expected_messages] == []
    finally:
        with connect(faktory_server.url) as conn:
            discard = commands.mutate("discard", "retries", {"jids": [throws["jid"], unknown["jid"]]})
            assert conn.command(discard) == Simple("OK")


@pytest.mark.faktory_server_only
def test_node_worker_heartbeat_and_quiet(
    node_client: NodeClient, faktory_server: FaktoryServer, interop_queue: str
) -> None:
    wid = unique("wid")
    label = unique("label")
    node = node_client.start(
        QUIET_SCRIPT,
        url=faktory_server.url,
        env={"INTEROP_QUEUE": interop_queue, "INTEROP_WID": wid, "INTEROP_LABEL": label},
    )
    working = node.expect(lambda event: event.get("event") == "working")
    assert working["wid"] == wid

    record = faktory_server.workers()[wid]
    assert record["hostname"] == socket.gethostname()
    assert record["pid"] == node.pid == working["pid"]
    assert sorted(record["labels"]) == sorted(["node", label])
    assert record["state"] == "running"

    # Heartbeats every 0.2 s, answered with OK while running.
    _expect_beats(node, 3, timeout=5)
    assert {event["state"] for event in _events(node.events, "beat")} == {"OK"}

    assert faktory_server.quiet(wid) is True
    assert faktory_server.workers()[wid]["state"] == "quiet"
    quiet_at = len(node.events)
    node.expect_after(quiet_at, lambda event: event == {"event": "beat", "state": "quiet"}, timeout=5)
    node.expect_after(quiet_at, lambda event: event.get("event") == "quiet", timeout=5)
    # The FETCH in flight when the worker went quiet comes back empty (FETCH blocks for fetch_timeout).
    wait_until(lambda: _fetches_in_flight(node) == 0, timeout=5)
    fetches_before = len(_events(node.events, "fetch-start"))

    job = {"jid": unique("quiet"), "jobtype": "NodeQuietJob", "queue": interop_queue, "args": [], "retry": 0}
    with connect(faktory_server.url) as conn:
        _push(conn, job)
    _expect_beats(node, 2, timeout=5, after=len(node.events))  # two more heartbeat intervals
    node.settle(0.2)
    assert [queued["jid"] for queued in faktory_server.queue(interop_queue)] == [job["jid"]]
    assert len(_events(node.events, "fetch-start")) == fetches_before
    assert not _events(node.events, "job")
    assert node.popen.poll() is None, "quiet alone must not end the worker"
    assert faktory_server.workers()[wid]["state"] == "quiet"

    # Terminate: the next BEAT answers "terminate", the worker stops, and its record goes with its connections.
    assert faktory_server.terminate(wid) is True
    node.expect(lambda event: event.get("event") == "stopped", timeout=10)
    assert node.wait(timeout=10) == 0, node.output()
    assert not _events(node.events, "job")
    wait_until(lambda: wid not in faktory_server.workers(), timeout=5)


def _fetches_in_flight(node: NodeProcess) -> int:
    node.settle(0.05)
    return len(_events(node.events, "fetch-start")) - len(_events(node.events, "fetch-end"))


def _expect_beats(node: NodeProcess, count: int, *, timeout: float, after: int = 0) -> None:
    """Wait for ``count`` BEAT events among the events from index ``after`` on."""

    def enough() -> bool:
        node.settle(0.05)
        return len(_events(node.events[after:], "beat")) >= count

    wait_until(enough, timeout=timeout)


def test_node_client_password(node_client: NodeClient, faktory_server_factory: Callable[..., FaktoryServer]) -> None:
    server = faktory_server_factory(password="abc=123")
    queue = unique("pw")
    url = f"tcp://:abc%3D123@127.0.0.1:{server.port}"
    events = node_client.run(
        PASSWORD_SCRIPT,
        url=url,
        env={
            "INTEROP_QUEUE": queue,
            "INTEROP_WRONG_URL": f"tcp://:abc%3D124@127.0.0.1:{server.port}",
            "INTEROP_NO_PASSWORD_URL": f"tcp://127.0.0.1:{server.port}",
        },
    )
    (pushed,) = _events(events, "pushed")
    (job,) = server.queue(queue)
    assert job["jid"] == pushed["jid"]
    assert job["args"] == ["secret-ok"]
    assert not _events(events, "accepted")
    rejected = {event["name"]: event["message"] for event in _events(events, "rejected")}
    assert set(rejected) == {"wrong", "missing"}
    for message in rejected.values():
        assert "Invalid password" in message


def test_cli_server_serves_the_node_client(node_client: NodeClient, tmp_path: Path) -> None:
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    queue = unique("cli")
    with _cli_server(port, log) as server:
        wait_until(lambda: server.poll() is not None or _greets(url), timeout=20, interval=0.1)
        assert server.poll() is None, log.read_text(errors="replace")

        events = node_client.run(ROUNDTRIP_SCRIPT, url=url, env={"INTEROP_QUEUE": queue}, timeout=30)
        (pushed,) = _events(events, "pushed")
        assert pushed["rejected"] == {}
        seen = _events(events, "job")
        assert sorted(event["jid"] for event in seen) == sorted(pushed["jids"])
        assert sorted(event["args"][0] for event in seen) == [0, 1, 2, 3]
        _assert_not_reserved(url, pushed["jids"])
        with connect(url) as conn:
            info = conn.json(commands.info())
        assert info["faktory"]["queues"].get(queue, 0) == 0

        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within 5 s of SIGTERM\n{log.read_text(errors='replace')}")
        assert code == 0, (code, log.read_text(errors="replace"))
