"""``DeFlow``: the per-process singleton that binds workflows to a Celery app and a Redis server.

It wires the parts together: the Redis client and ``StateStore``, the handler allowlist, the internal Celery
tasks, the lease keeper, the recovery scan and the event hub.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .attempts import HookCaller
from .config import DEFAULT_CHECK_INTERVAL, DEFAULT_RESULT_TTL, DeflowConfig, RedisSettings
from .errors import NotRegistered
from .events import EventHub
from .execution import Executor
from .handler import HandlerLoader
from .keys import KeySchema
from .leases import LeaseKeeper
from .phases import PhaseDriver
from .recovery import LeaseScanner
from .results import read_result
from .store import StateStore
from .tasks import register_tasks

__all__ = ["DeFlow"]

logger = logging.getLogger(__name__)


def _redis_client(settings: RedisSettings) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=settings.retry_max_delay, base=0.05), settings.max_attempts - 1)
    options: dict[str, Any] = {"decode_responses": True, "retry": retry, "health_check_interval": 30}
    if settings.connect_timeout is not None:
        options["socket_connect_timeout"] = settings.connect_timeout
    if settings.url is not None:
        return redis.Redis.from_url(settings.url, **options)
    return redis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password,
        ssl=settings.ssl,
        **options,
    )


def _settings(app: Any, connection: Mapping[str, Any] | None, url: str | None) -> RedisSettings:
    if connection is not None and url is not None:
        raise ValueError("give either connection or url, not both")
    if connection is not None:
        return RedisSettings.from_connection(connection)
    if url is None:
        backend = app.conf.result_backend
        if not isinstance(backend, str) or not backend.startswith(("redis://", "rediss://")):
            raise ValueError("no Redis for DeFlow: pass connection= or url=, or use a Redis result backend")
        url = backend
    return RedisSettings(url=url)


def _names(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def _result_ttl(app: Any) -> float:
    expires = app.conf.result_expires
    if isinstance(expires, timedelta):
        expires = expires.total_seconds()
    return float(expires) if expires else DEFAULT_RESULT_TTL


class DeFlow:
    """DeFlow bound to a Celery app and a Redis server; one per process (see :meth:`register`).

    Attributes:
        id: a random id of this instance.
        app: the Celery app.
        config: the parsed configuration.
        store: the state store (the Redis side of everything).
    """

    _instance: ClassVar[DeFlow | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, app: Any, config: DeflowConfig) -> None:
        self.id = uuid.uuid4().hex[:22]
        self.app = app
        self.config = config
        self.client = _redis_client(config.redis)
        self.store = StateStore(
            self.client,
            KeySchema(config.key_prefix),
            lease_ms=config.lease_timeout_ms,
            state_ttl_ms=config.state_ttl_ms,
            result_ttl_ms=config.result_ttl_ms,
        )
        allowed = [*config.handler_modules, *_names(app.conf.include), *_names(app.conf.imports)]
        self.loader = HandlerLoader(allowed)
        self.keeper = LeaseKeeper(self.store, renew_interval=config.lease_timeout / 4)
        self.driver = PhaseDriver(
            self.store,
            register_tasks(app, self),
            max_batch_size=config.max_batch_size,
            target_batches=config.target_batches,
        )
        self.executor = Executor(
            self.store,
            self.loader,
            HookCaller(),
            self.keeper,
            self.driver,
            claim_window=config.claim_window,
            max_window=config.max_batch_size,
            split_after=config.split_after,
        )
        self.scanner = LeaseScanner(
            self.store,
            self.driver,
            interval=config.check_process_queue_interval,
            stall_grace=2 * config.lease_timeout,
        )
        self.events = EventHub(self.client, self.store.keys, lambda wf: read_result(self.store, wf))

    @classmethod
    def register(
        cls,
        app: Any,
        *,
        connection: Mapping[str, Any] | None = None,
        url: str | None = None,
        check_process_queue_interval: float = DEFAULT_CHECK_INTERVAL,
        key_prefix: str = "deflow",
        handler_modules: Iterable[str] | None = None,
        **tuning: Any,
    ) -> DeFlow:
        """Bind DeFlow to ``app`` and a Redis server, and register its internal tasks on ``app``.

        Args:
            app: the Celery app (its result backend must support chords: Redis).
            connection: ``host``, ``port`` (6379), ``db``, ``username``, ``password``, ``ssl``,
                ``max_attempts``, ``connect_timeout`` (s), ``retry_max_delay`` (s).
            url: a ``redis://``/``rediss://`` URL instead of ``connection``. With neither, the app's Redis result
                backend URL.
            check_process_queue_interval: period (s) of the crash-recovery scan; 0 disables it.
            key_prefix: prefix of every Redis key and channel.
            handler_modules: modules (and their submodules) workers may load handlers from, besides those
                already imported and the app's ``include``/``imports``.
            **tuning: other :class:`~celery_deflow.config.DeflowConfig` fields (``lease_timeout``, ``split_after``,
                ``max_batch_size``, ``target_batches``, ``claim_window``, ``state_ttl``, ``result_ttl``).

        A second call returns the registered instance and logs a warning.
        """
        with cls._lock:
            if cls._instance is not None:
                logger.warning("You tried to register DeFlow more than once")
                return cls._instance
            tuning.setdefault("result_ttl", _result_ttl(app))
            config = DeflowConfig(
                redis=_settings(app, connection, url),
                key_prefix=key_prefix,
                check_process_queue_interval=check_process_queue_interval,
                handler_modules=DeflowConfig.modules(handler_modules),
                **tuning,
            )
            instance = cls(app, config)
            instance.scanner.start()
            cls._instance = instance
            return instance

    @classmethod
    def unregister(cls) -> None:
        """Stop the background threads and close the connections; no-op when nothing is registered."""
        with cls._lock:
            instance, cls._instance = cls._instance, None
        if instance is not None:
            instance.scanner.stop()
            instance.keeper.stop()
            instance.events.close()
            instance.client.close()

    @classmethod
    def get_instance(cls) -> DeFlow:
        """The registered instance; ``RuntimeError("You must register a DeFlow instance")`` when none."""
        instance = cls._instance
        if instance is None:
            raise NotRegistered()
        return instance
