"""A Faktory toolkit for Celery users.

The public names: :class:`Client` and :class:`Job` (producing), :class:`Worker` with :func:`register` and
:func:`current_job` (consuming), the errors under :class:`FaktoryError`; the
sans-I/O wire protocol in :mod:`celery_faktory.protocol`; an in-memory Faktory 1.9.4 work server in
:mod:`celery_faktory.server`; pytest fixtures in :mod:`celery_faktory.pytest_plugin`.
"""

import kombu.transport

from celery_faktory.client import Client
from celery_faktory.config import ClientConfig
from celery_faktory.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectFailed,
    ConnectionLost,
    FaktoryConnectionError,
    FaktoryError,
    FaktoryTimeout,
    HandshakeError,
    InvalidCommand,
    JobRejected,
    MalformedReply,
    ProtocolError,
    ServerError,
)
from celery_faktory.job import Job
from celery_faktory.worker import JobContext, Worker, current_job, register

__all__ = [
    "AuthenticationFailed",
    "Client",
    "ClientConfig",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "FaktoryConnectionError",
    "FaktoryError",
    "FaktoryTimeout",
    "HandshakeError",
    "InvalidCommand",
    "Job",
    "JobContext",
    "JobRejected",
    "MalformedReply",
    "ProtocolError",
    "ServerError",
    "Worker",
    "current_job",
    "register",
]

# The ``faktory://`` broker URL scheme (kombu has no entry points for transports); see celery_faktory.transport.
kombu.transport.TRANSPORT_ALIASES.setdefault("faktory", "celery_faktory.transport:Transport")
