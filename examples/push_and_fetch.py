"""Start the in-memory Faktory server, push a few jobs, fetch them back and acknowledge them.

Run it with ``python examples/push_and_fetch.py``; pass ``--url tcp://host:7419`` to use a real Faktory.
"""

from __future__ import annotations

import argparse
import contextlib
from datetime import datetime, timedelta, timezone

from celery_faktory import Client, Job
from celery_faktory.server import FaktoryServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="a Faktory server to use instead of the in-memory one")
    url = parser.parse_args().url
    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(FaktoryServer(port=0)).url
        client = stack.enter_context(Client(url))
        queue = "example-" + Job("x").jid[:8]
        client.push(Job("SendEmail", ["ada@example.com", "Welcome"], queue=queue))
        rejected = client.push_bulk(Job("Resize", [f"photo-{n}.jpg", 640], queue=queue) for n in range(3))
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        client.push(Job("Report", ["monthly"], queue=queue, at=later))
        print(f"pushed 4 jobs now and 1 for {later:%H:%M} UTC to {queue!r} on {client.config.safe_url}")
        print(f"rejected by PUSHB: {rejected or 'none'}")
        while (job := client.fetch(queue)) is not None:
            print(f"fetched {job.jobtype}{tuple(job.args)} jid={job.jid}")
            client.ack(job.jid)
        print(f"queue sizes now: {client.queue_sizes().get(queue, 0)} waiting")
        client.scheduled.discard(jobtype="Report")
        client.queue_remove(queue)


if __name__ == "__main__":
    main()
