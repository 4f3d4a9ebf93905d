"""The Celery app of the DeFlow worker subprocesses (``celery -A tests.deflow.worker_app worker``).

Configured from the environment: ``DEFLOW_BROKER_URL``, ``DEFLOW_BROKER_OPTIONS`` (JSON), ``DEFLOW_REDIS_URL``,
``DEFLOW_LEASE_TIMEOUT``,
``DEFLOW_CHECK_INTERVAL``, ``DEFLOW_TARGET_BATCHES``, ``DEFLOW_SPLIT_AFTER``.
"""

from __future__ import annotations

import json
import os

from celery import Celery

from celery_deflow import DeFlow

app = Celery("deflow-tests", broker=os.environ["DEFLOW_BROKER_URL"], backend=os.environ["DEFLOW_REDIS_URL"])
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_transport_options=json.loads(os.environ.get("DEFLOW_BROKER_OPTIONS", "{}")),
    result_expires=600,
    worker_hijack_root_logger=False,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)
deflow = DeFlow.register(
    app,
    url=os.environ["DEFLOW_REDIS_URL"],
    check_process_queue_interval=float(os.environ.get("DEFLOW_CHECK_INTERVAL", "0.3")),
    lease_timeout=float(os.environ.get("DEFLOW_LEASE_TIMEOUT", "1.0")),
    handler_modules=["tests.deflow.handlers"],
    target_batches=int(os.environ.get("DEFLOW_TARGET_BATCHES", "16")),
    split_after=float(os.environ.get("DEFLOW_SPLIT_AFTER", "0.5")),
)
