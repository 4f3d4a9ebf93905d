"""``LeaseKeeper``: names this process's leases and keeps the live ones alive. Imports ``store``.

Every claimed attempt (or window of attempts, or hook run, or concurrency slot) is held under a lease that
expires ``lease_timeout`` after its last renewal. A background thread renews the leases this process holds,
so a lease only expires when its process is gone (or frozen): the recovery scan can tell a crashed attempt
from a slow or sleeping one.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid

import redis

from .store import StateStore

__all__ = ["LeaseKeeper"]

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Lease ids and their renewal for one process (restarted lazily after a fork)."""

    def __init__(self, store: StateStore, *, renew_interval: float) -> None:
        self._store = store
        self._interval = renew_interval
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._leases: set[str] = set()
        self._slots: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ensure_running(self) -> None:
        if self._pid != os.getpid():
            self._reset()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="deflow-leases", daemon=True)
                    self._thread.start()

    def new_lease(self) -> str:
        """A new lease id, unique across processes."""
        if self._pid != os.getpid():
            self._reset()
        return f"{self._prefix}:{next(self._counter)}"

    def hold(self, lease_id: str) -> None:
        """Renew ``lease_id`` until :meth:`release`."""
        self._ensure_running()
        with self._lock:
            self._leases.add(lease_id)

    def release(self, lease_id: str) -> None:
        """Stop renewing ``lease_id``."""
        with self._lock:
            self._leases.discard(lease_id)

    def hold_slot(self, key: str, member: str) -> None:
        """Renew a concurrency slot until :meth:`release_slot`."""
        self._ensure_running()
        with self._lock:
            self._slots.add((key, member))

    def release_slot(self, key: str, member: str) -> None:
        """Stop renewing a concurrency slot."""
        with self._lock:
            self._slots.discard((key, member))

    def renew_now(self) -> None:
        """Renew every held lease and slot once."""
        with self._lock:
            leases, slots = list(self._leases), list(self._slots)
        if leases or slots:
            self._store.renew(leases, slots)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.renew_now()
            except redis.RedisError as exc:
                logger.warning("could not renew leases: %s", exc)

    def stop(self) -> None:
        """Stop the renewal thread."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
