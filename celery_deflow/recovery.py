"""``LeaseScanner``: the crash-recovery scan. Imports ``store``, ``phases``, ``events``.

Every ``check_process_queue_interval`` seconds, in every registered process, the scan looks for leases whose
expiry has passed -- their process stopped renewing them, so it died -- and takes each over with one atomic
transition (no global lock: when several processes race for a lease, one gets it). The attempts it held count
as failed with a "worker lost" error and are retried like any failed attempt; a hook run it held ends with
that error. Then, if that was the last outstanding work of the phase, the phase is closed.

The scan also publishes the owed dispatches of running workflows that their publisher did not confirm in time
(tasks added to a running phase, retries made due: the process died, or the broker refused the publish, right
after the transition that recorded them), and watches for a phase that stays stuck longer than
``stall_grace``: a phase
whose work is all finished but whose chord body never arrives (a header message held by a dead worker that
the broker redelivers late, or never) is closed; a phase that was never published (its launcher died between
the transition and the publish) is launched again. Both actions are idempotent, so racing scanners are fine.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from .errors import WorkerLost
from .events import error_event
from .model import format_token
from .phases import PhaseDriver
from .store import StateStore

__all__ = ["WORKER_LOST", "LeaseScanner"]

logger = logging.getLogger(__name__)

#: The error recorded for an attempt lost with its worker.
WORKER_LOST = "worker lost: the attempt's worker stopped renewing its lease (it died or froze)"


class LeaseScanner:
    """Reclaims expired leases, periodically on a thread or on demand with :meth:`scan_once`."""

    def __init__(self, store: StateStore, driver: PhaseDriver, *, interval: float, stall_grace: float) -> None:
        self._store = store
        self._driver = driver
        self._interval = interval
        self._stall_grace = stall_grace
        self._suspects: dict[tuple[str, str, str], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the periodic scan (no-op when the interval is 0 or the scan already runs)."""
        if self._interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="deflow-recovery", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the periodic scan."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    @property
    def running(self) -> bool:
        """Whether the periodic scan runs in this process."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.scan_once()
            except redis.RedisError as exc:
                logger.warning("recovery scan failed: %s", exc)
            except Exception:
                logger.exception("recovery scan failed")

    def scan_once(self) -> int:
        """Reclaim every expired lease and unstick stalled phases now; returns how many leases were taken."""
        taken = self._reclaim()
        self._unstick()
        return taken

    def _repay(self, workflow_id: str) -> None:
        for owed in self._store.overdue(workflow_id):
            logger.warning(
                "dispatch %s of workflow %s was never confirmed published; publishing it", owed.member, workflow_id
            )
            self._driver.dispatch_owed(owed)

    def _unstick(self) -> None:
        now = time.monotonic()
        seen: dict[tuple[str, str, str], float] = {}
        for wf in self._store.running_workflows():
            self._repay(wf)
            state = self._store.phase_state(wf)
            if state is None:
                continue
            if not state.launched:
                suspect = (wf, state.token, "launch")
            elif state.finished and not state.body_arrived:
                suspect = (wf, state.token, "body")
            else:
                continue
            since = seen[suspect] = self._suspects.get(suspect, now)
            if now - since < self._stall_grace:
                continue
            del seen[suspect]
            if suspect[2] == "launch":
                logger.warning("phase %s of workflow %s was never launched; launching it", state.token, wf)
                self._driver.launch(wf, state.token, state.total)
            else:
                logger.warning(
                    "phase %s of workflow %s is finished but its chord body is missing; closing it", state.token, wf
                )
                self._driver.close(wf, state.token, arrived=True)
        self._suspects = seen

    def _reclaim(self) -> int:
        taken = 0
        for lease in self._store.expired_leases():
            reclaimed = self._store.reclaim_lease(lease, WORKER_LOST)
            if reclaimed is None:
                continue
            taken += 1
            wf, sid = reclaimed.workflow_id, reclaimed.sid
            logger.warning("reclaimed lease %s of workflow %s step %s (%s)", lease, wf, sid, reclaimed.kind)
            if reclaimed.kind != "t":
                record = self._store.step(wf, sid)
                self._store.publish(wf, error_event(wf, WorkerLost(WORKER_LOST), record.key if record else None))
            elif reclaimed.retries:
                record = self._store.step(wf, sid)
                delay = record.options.task_fail_retry_delay if record else None
                self._driver.dispatch_retries(wf, sid, reclaimed.retries, delay)
            if reclaimed.complete:
                self._driver.close(wf, format_token(sid, reclaimed.kind), arrived=False)
        return taken
