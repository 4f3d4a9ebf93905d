"""Handlers in a module that takes a while to import (see test_handlers: concurrent first loads)."""

import time

from celery_deflow import StepHandler

time.sleep(0.2)


class Slow(StepHandler):
    def handler(self, task, step):
        return task.data
