"""Job functions for the command-line tests, loaded by ``python -m celery_faktory.worker -r`` in a subprocess."""

from __future__ import annotations

import logging
import time

from celery_faktory.worker import JobContext, register

log = logging.getLogger(__name__)


@register
def cli_record(value: str, *, job: JobContext) -> None:
    log.info("cli_record ran %s with %s", job.jid, value)


@register
def cli_sleep(seconds: float, *, job: JobContext) -> None:
    """Ignores cancellation on purpose: the worker must still FAIL it and exit."""
    log.info("cli_sleep started %s", job.jid)
    time.sleep(seconds)
