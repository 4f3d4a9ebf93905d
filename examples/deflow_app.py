"""A Celery project that uses celery_deflow: the app and its step handlers, as a user would write them.

``examples/deflow_demo.py`` runs a worker on this module (``celery -A deflow_app worker``) and a workflow made
of these steps. The broker and the Redis server come from ``DEMO_BROKER_URL`` and ``DEMO_REDIS_URL``.

The workflow "publish a catalogue": fetch every page (a page fails once and is retried), then, from the fetching
step's ``after_all``, insert a translation step for the long pages with ``add_after`` (it runs before the
next top-level step), then publish to every channel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from celery import Celery

from celery_deflow import DeFlow, Step, StepHandler, Task

BROKER_URL = os.environ.get("DEMO_BROKER_URL", "faktory://127.0.0.1:7419")
REDIS_URL = os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Seconds each simulated page fetch or translation takes, so that progress is worth watching.
WORK_SECONDS = float(os.environ.get("DEMO_WORK_SECONDS", "0.05"))
#: Pages longer than this many words get translated.
LONG_PAGE = 120

app = Celery("catalogue", broker=BROKER_URL, backend=REDIS_URL)
app.conf.update(worker_prefetch_multiplier=1, result_expires=3600)
deflow = DeFlow.register(app, url=REDIS_URL, check_process_queue_interval=1.0)


def words_on(page: int) -> int:
    """How many words the simulated page ``page`` has."""
    return page * 37 % 101 + 50


class FetchPages(StepHandler):
    """Fetches every page of the catalogue; page 7 fails on its first attempt."""

    options: ClassVar[Mapping[str, Any]] = {
        "task_max_fail_count": 3,
        "task_fail_retry_delay": 0.2,
        "task_timeout": 10.0,
    }

    def before_all(self, step: Step) -> None:
        step.add_tasks(range(1, step.data["pages"] + 1))

    def handler(self, task: Task, step: Step) -> dict[str, int]:
        time.sleep(WORK_SECONDS)
        if task.data == 7 and task.failed_count == 0:
            raise ConnectionError("page 7: connection reset by peer")
        return {"page": task.data, "words": words_on(task.data)}

    def after_all(self, step: Step) -> None:
        long_pages = [task.result["page"] for task in step.get_results() if task.result["words"] > LONG_PAGE]
        step.add_after(Translate, tasks=long_pages, data={"language": "fr"})


class Translate(StepHandler):
    """Translates one page into ``step.data["language"]``."""

    def handler(self, task: Task, step: Step) -> str:
        time.sleep(WORK_SECONDS * 2)
        return f"page {task.data} in {step.data['language']}"


class Publish(StepHandler):
    """Publishes the catalogue to one channel per task."""

    def before_all(self, step: Step) -> None:
        step.add_tasks(step.data["channels"])

    def handler(self, task: Task, step: Step) -> Any:
        time.sleep(WORK_SECONDS)
        return f"published on {task.data}"
