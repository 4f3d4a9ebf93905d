"""Series 5's initiator: creates a workflow, prints its id, runs it, and dies on its first next_task event.

Run as ``python -m tests.deflow.initiator`` with ``DEFLOW_BROKER_URL``, ``DEFLOW_BROKER_OPTIONS`` and
``DEFLOW_REDIS_URL`` set. It is not a worker: the workflow must complete without it.
"""

from __future__ import annotations

import json
import os
import sys
import time

from celery import Celery

import celery_faktory  # noqa: F401  (a plain program, not the celery CLI: this registers faktory://)
from celery_deflow import DeFlow, Workflow
from tests.deflow import handlers


def main() -> None:
    app = Celery("initiator", broker=os.environ["DEFLOW_BROKER_URL"], backend=os.environ["DEFLOW_REDIS_URL"])
    app.conf.broker_transport_options = json.loads(os.environ.get("DEFLOW_BROKER_OPTIONS", "{}"))
    DeFlow.register(app, url=os.environ["DEFLOW_REDIS_URL"], check_process_queue_interval=0)
    wf = Workflow.create("test", task_timeout=0.1, task_max_fail_count=2, clean_on_done=False)
    wf.add_step(handlers.Echo, tasks=range(150))
    wf.on("next_task", lambda event: os._exit(17))
    print(json.dumps({"workflow_id": wf.id, "task_count": 150}), flush=True)  # before a next_task can end us
    wf.run()
    time.sleep(30)  # the first next_task event ends the process
    sys.exit(1)


if __name__ == "__main__":
    main()
