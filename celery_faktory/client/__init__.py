"""The Faktory client: :class:`Client` over a :class:`ConnectionPool` of :class:`Connection` objects.

Builds on the protocol core and never imports the server.
"""

from celery_faktory.client.client import Client, SortedSet
from celery_faktory.client.connection import Connection
from celery_faktory.client.pool import ConnectionPool

__all__ = ["Client", "Connection", "ConnectionPool", "SortedSet"]
