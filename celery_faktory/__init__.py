"""A Faktory toolkit for Celery users: protocol core, Faktory-compatible server and pytest fixtures.

Public names live in their subpackages: :mod:`celery_faktory.protocol` (the sans-I/O wire protocol),
:mod:`celery_faktory.server` (``FaktoryServer``, an in-memory Faktory 1.9.4 work server) and
:mod:`celery_faktory.errors` (the exception tree).
"""

from celery_faktory.errors import FaktoryError

__all__ = ["FaktoryError"]
