"""The native Faktory worker: :class:`Worker`, job registration, middleware and the job context.

Example::

    from celery_faktory.worker import JobContext, Worker, register

    @register
    def send_email(address: str, *, job: JobContext) -> None:
        print("job", job.jid, "to", address)

    Worker("tcp://localhost:7419", queues=("critical", "default")).work()

Or from the command line: ``python -m celery_faktory.worker -r my.jobs -q critical,default``.

Builds on :mod:`celery_faktory.client` and :mod:`celery_faktory.protocol`; never imports the server, kombu or
celery.
"""

from celery_faktory.worker.context import JobContext, current_job
from celery_faktory.worker.middleware import Middleware, MiddlewareChain
from celery_faktory.worker.options import WorkerOptions
from celery_faktory.worker.queues import QueuePlan, parse_queues, strict_order, weighted_order
from celery_faktory.worker.registry import Handler, Registry, UnknownJobType, register, registry
from celery_faktory.worker.worker import Worker, WorkerStats

__all__ = [
    "Handler",
    "JobContext",
    "Middleware",
    "MiddlewareChain",
    "QueuePlan",
    "Registry",
    "UnknownJobType",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
    "current_job",
    "parse_queues",
    "register",
    "registry",
    "strict_order",
    "weighted_order",
]
