"""A Celery app for the ``celery -A tests.faktory.cli_app faktory info`` test; it never imports celery_faktory."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("cli-test", broker=os.environ["CLI_TEST_BROKER_URL"])
