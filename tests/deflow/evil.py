"""A module no worker may ever import on the word of Redis (see test_handlers)."""

from celery_deflow import StepHandler

raise RuntimeError("tests.deflow.evil must never be imported by a worker")


class Evil(StepHandler):  # pragma: no cover - unreachable
    def handler(self, task, step):
        return "pwned"
