"""The kombu :class:`Transport` for ``faktory://``: identity, errors, connecting, draining, the event loop.

The transport parses its options once (:class:`~celery_faktory.transport.options.TransportOptions`), builds the
:class:`~celery_faktory.config.ClientConfig` from kombu's connection parameters (host, port, password, ``ssl``,
``connect_timeout``) and owns the pooled command :class:`~celery_faktory.client.Client` its channels share.
:meth:`Transport.establish_connection` opens a connection and completes the handshake at once, so a refused
connection or a wrong password is seen immediately and kombu's failover moves on to the next URL. It never
imports the worker or the server.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from importlib import metadata
from queue import Empty
from typing import Any

from kombu.transport import virtual

from celery_faktory.client import Client
from celery_faktory.config import DEFAULT_PORT, ClientConfig
from celery_faktory.errors import ConfigurationError, FaktoryConnectionError, MalformedReply, ServerError
from celery_faktory.transport.channel import Channel
from celery_faktory.transport.options import DEFAULT_POLLING_INTERVAL, TransportOptions

__all__ = ["Transport", "client_config"]

#: kombu ``ssl`` / ``broker_use_ssl`` keys (with or without the ``ssl_`` prefix) and the ClientConfig fields.
_TLS_FILES = {"ca_certs": "tls_ca", "certfile": "tls_cert", "keyfile": "tls_key"}
_CERT_REQS = {
    "none": False,
    "cert_none": False,
    "optional": True,
    "cert_optional": True,
    "required": True,
    "cert_required": True,
}


def _verify(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return ssl.VerifyMode(value) != ssl.CERT_NONE
    if isinstance(value, str) and value.strip().lower() in _CERT_REQS:
        return _CERT_REQS[value.strip().lower()]
    raise ConfigurationError(f"TLS cert_reqs must be CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED, got {value!r}")


def _tls_fields(value: Any, host: str) -> dict[str, Any]:
    """ClientConfig fields for kombu's ``ssl`` parameter or the ``tls`` transport option."""
    if not value:
        return {}
    if value is True:
        return {"tls": True}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"TLS settings must be True or a mapping, got {value!r}")
    fields: dict[str, Any] = {"tls": True}
    for raw_key, setting in value.items():
        key = raw_key[4:] if raw_key.startswith("ssl_") else raw_key
        if key in _TLS_FILES:
            fields[_TLS_FILES[key]] = setting or None
        elif key == "cert_reqs":
            if setting is not None:
                fields["tls_verify"] = _verify(setting)
        elif key == "check_hostname":
            if setting is False and fields.get("tls_verify", True):
                raise ConfigurationError(
                    "TLS check_hostname=False with certificate checks on is not supported; "
                    "use cert_reqs=CERT_NONE to turn both off"
                )
        elif key == "server_hostname":
            if setting not in (None, host):
                raise ConfigurationError("TLS server_hostname must be the broker host (SNI uses the URL's host)")
        else:
            raise ConfigurationError(
                f"unknown TLS setting {raw_key!r}; use ca_certs, certfile, keyfile, cert_reqs or check_hostname"
            )
    return fields


def client_config(conninfo: Any, options: TransportOptions) -> ClientConfig:
    """The :class:`ClientConfig` for a :class:`kombu.Connection` and the transport's options.

    Raises:
        ConfigurationError: The TLS settings or timeouts cannot be used.
    """
    host = conninfo.hostname or "localhost"
    password = conninfo.password
    if callable(password):
        password = password()
    tls = options.tls if options.tls is not None else conninfo.ssl
    connect_timeout = options.connect_timeout or conninfo.connect_timeout or 5.0
    return ClientConfig(
        host=host,
        port=int(conninfo.port or DEFAULT_PORT),
        password=password or None,
        username=conninfo.userid or None,
        connect_timeout=float(connect_timeout),
        read_timeout=options.read_timeout,
        **_tls_fields(tls, host),
    )


#: The channel class, under a name that the ``Transport.Channel`` attribute does not shadow in annotations.
_FaktoryChannel = Channel

#: kombu's virtual transport has no annotations; typed as ``Any`` so that strict mypy checks our side only.
_VirtualTransport: Any = virtual.Transport


class Transport(_VirtualTransport):  # type: ignore[misc]
    """kombu transport for Faktory (see :mod:`celery_faktory.transport` for URLs and options).

    Args:
        client: The :class:`kombu.Connection` this transport serves.
    """

    Channel = Channel

    default_port = DEFAULT_PORT
    driver_type = "faktory"
    driver_name = "faktory"
    #: Event-loop capable (Celery runs its ``asynloop``), no fanout (so Celery turns remote control off), PUSHB
    #: batches.
    implements = _VirtualTransport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset({"direct", "topic"}),
        heartbeats=False,
        batch_publish=True,
    )
    #: Errors after which kombu and Celery reconnect.
    connection_errors = (*_VirtualTransport.connection_errors, FaktoryConnectionError, MalformedReply, OSError)
    #: Errors that fail one operation (``-ERR`` replies).
    channel_errors = (*_VirtualTransport.channel_errors, ServerError)
    recoverable_connection_errors = connection_errors
    recoverable_channel_errors = ()
    #: Seconds slept between polls that came back at once; the ``polling_interval`` option overrides it.
    polling_interval = DEFAULT_POLLING_INTERVAL

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.options = TransportOptions.from_transport_options(client.transport_options)
        self.polling_interval = self.options.polling_interval
        self.client_config = client_config(client, self.options)
        self._command_client: Client | None = None
        #: Queues declared through this connection (passive declares of them succeed after a purge).
        self.declared_queues: set[str] = set()
        #: The event loop this transport is registered with, and the FETCH socket it watches for each channel.
        self._loop: Any = None
        self._watched: dict[_FaktoryChannel, tuple[int, Any]] = {}
        self._by_fd: dict[int, _FaktoryChannel] = {}

    @property
    def command_client(self) -> Client:
        """The pooled, thread-safe client for every command but the channels' FETCHes (created on demand)."""
        if self._command_client is None:
            self._command_client = Client(config=self.client_config, pool_size=self.options.command_connections)
        return self._command_client

    def establish_connection(self) -> Any:
        """Connect and complete the handshake now (errors surface here), then create the first channel."""
        self.command_client.connect()
        return super().establish_connection()

    def close_connection(self, connection: Any) -> None:
        """Close every channel (restoring their unacknowledged messages), then the command connections.

        The transport also leaves the event loop it was registered with.
        """
        try:
            self._leave_event_loop()
            super().close_connection(connection)
        finally:
            client, self._command_client = self._command_client, None
            if client is not None:
                client.close()

    def verify_connection(self, connection: Any) -> bool:
        """Whether the connection is open (cheap; kombu calls this on every access)."""
        return self._command_client is not None

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message, waiting up to ``timeout`` seconds (``None``: forever).

        Raises:
            socket.timeout: Nothing arrived in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            started = time.monotonic()
            remaining = None if deadline is None else max(deadline - started, 0.0)
            try:
                self.cycle.get(self._deliver, timeout=remaining)
            except Empty:
                pass
            else:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError()
            # A FETCH that waited on the server is its own pause; sleep only after a poll that returned at once
            # (no consumer, prefetch limit reached, an expired message dropped).
            pause = self.polling_interval - (now - started)
            if deadline is not None:
                pause = min(pause, deadline - now)
            if pause > 0:
                time.sleep(pause)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Consume through ``loop`` (Celery's hub): FETCH before each poll, read replies when their socket is ready.

        Before every poll (the hub's ``on_tick``) each channel with a consumer sends a FETCH if none is pending
        and its QoS allows one more message, and its FETCH socket is watched; when the socket becomes readable
        the reply is read without blocking (it may arrive in pieces) and its job delivered. An empty FETCH
        blocks on the server for about 2 s, which is the loop's pause: nothing spins. Errors of the FETCH
        connection propagate out of the loop, so Celery reconnects.
        """
        self._leave_event_loop()
        self._loop = loop
        loop.on_tick.add(self._on_poll_start)

    def _on_poll_start(self) -> None:
        loop = self._loop
        if loop is None:
            return
        for channel in list(self.channels):
            fetch_connection = channel.poll_start()
            watched = self._watched.get(channel)
            if watched is not None and (fetch_connection is None or watched[1] is not fetch_connection):
                self._unwatch(channel)
                watched = None
            if fetch_connection is not None:
                fd = fetch_connection.fileno()
                if watched is None or fd not in loop.readers:
                    self._watched[channel] = (fd, fetch_connection)
                    self._by_fd[fd] = channel
                    loop.add_reader(fd, self.on_readable, fd)
        for channel in [channel for channel in self._watched if channel not in self.channels]:
            self._unwatch(channel)

    def on_readable(self, fileno: int) -> None:
        """The event loop saw the FETCH socket ``fileno`` become readable: let its channel read the reply."""
        channel = self._by_fd.get(fileno)
        if channel is not None:
            channel.on_readable()

    def _unwatch(self, channel: _FaktoryChannel) -> None:
        fd, _ = self._watched.pop(channel)
        if self._by_fd.get(fd) is channel:
            del self._by_fd[fd]
            if self._loop is not None:
                self._loop.remove_reader(fd)

    def _leave_event_loop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        for channel in list(self._watched):
            self._unwatch(channel)
        loop.on_tick.discard(self._on_poll_start)
        self._loop = None

    def driver_version(self) -> str:
        """The version of ``celery-faktory-deflow``."""
        try:
            return metadata.version("celery-faktory-deflow")
        except metadata.PackageNotFoundError:
            return "unknown"
