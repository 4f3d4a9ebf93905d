"""The worker's command line: ``python -m celery_faktory.worker -r my.jobs -q critical,default``.

The only place in the package that configures logging.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

import click

from celery_faktory.errors import FaktoryError
from celery_faktory.worker.fetch import DEFAULT_FETCH_DEPTH
from celery_faktory.worker.options import DEFAULT_BEAT_INTERVAL, DEFAULT_CONCURRENCY, DEFAULT_SHUTDOWN_TIMEOUT
from celery_faktory.worker.worker import Worker

__all__ = ["cli_queues", "main"]

log = logging.getLogger("celery_faktory.worker.cli")

_LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"


def cli_queues(values: Sequence[str]) -> list[str] | dict[str, int]:
    """Turn ``-q`` values into ``Worker(queues=...)``.

    Each value is a comma-separated list of ``name`` or ``name:weight``. Without any weight the queues are
    fetched in strict order, as given; with at least one, in weighted random order (a name without a weight
    weighs 1). No ``-q`` at all means ``default``.

    Raises:
        click.BadParameter: A weight is not a positive integer.
    """
    pairs: list[tuple[str, str | None]] = []
    for value in values:
        for raw in value.split(","):
            item = raw.strip()
            if item:
                name, colon, text = item.partition(":")
                pairs.append((name.strip(), text.strip() if colon else None))
    if not pairs:
        return ["default"]
    if all(weight is None for _, weight in pairs):
        return [name for name, _ in pairs]
    weights: dict[str, int] = {}
    for name, given in pairs:
        if given is not None and not (given.isdigit() and int(given) >= 1):
            raise click.BadParameter(f"the weight of queue {name!r} must be a positive integer, got {given!r}")
        weights[name] = 1 if given is None else int(given)
    return weights


def _import(modules: Sequence[str]) -> None:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import {module}: {exc}", param_hint="-r/--require") from exc


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-r",
    "--require",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first; its @register calls fill the job registry. Repeatable.",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME[:WEIGHT][,...]",
    help=(
        "Queues to fetch from, comma-separated, repeatable. Without weights the order is strict: "
        "'-q critical,default' drains critical first on every FETCH. With weights ('-q critical:3 -q default:1', "
        "a queue without one weighs 1) every FETCH draws a weighted random order. Default: default."
    ),
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Jobs run at once.",
)
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="tcp://[:password@]host[:port] or tcp+tls://...; default FAKTORY_PROVIDER / FAKTORY_URL.",
)
@click.option("--wid", default=None, help="Worker id; random by default.")
@click.option("-l", "--label", "labels", multiple=True, help="A label for the Busy page (repeatable).")
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_SHUTDOWN_TIMEOUT,
    show_default=True,
    help="Seconds running jobs get after TERM/INT before they are FAILed.",
)
@click.option(
    "--beat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_BEAT_INTERVAL,
    show_default=True,
    help="Seconds between heartbeats.",
)
@click.option(
    "--fetchers",
    type=click.IntRange(min=1),
    default=None,
    help="Fetcher connections; default concurrency // 5, between 1 and 4.",
)
@click.option(
    "--fetch-depth",
    type=click.IntRange(min=1),
    default=DEFAULT_FETCH_DEPTH,
    show_default=True,
    help="FETCHes each fetcher keeps in flight (pipelined) while the queues hold jobs.",
)
@click.option(
    "--reporters",
    type=click.IntRange(min=1),
    default=None,
    help="ACK/FAIL connections; default 1, or 2 from a concurrency of 10.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def main(
    modules: tuple[str, ...],
    queues: tuple[str, ...],
    concurrency: int,
    url: str | None,
    wid: str | None,
    labels: tuple[str, ...],
    shutdown_timeout: float,
    beat_interval: float,
    fetchers: int | None,
    fetch_depth: int,
    reporters: int | None,
    log_level: str,
) -> None:
    """Run a Faktory worker until TERM or INT (TSTP: stop fetching; TTIN: log thread stacks)."""
    logging.basicConfig(level=log_level.upper(), format=_LOG_FORMAT, stream=sys.stderr)
    _import(modules)
    try:
        worker = Worker(
            url,
            wid=wid,
            concurrency=concurrency,
            queues=cli_queues(queues),
            labels=labels or None,
            shutdown_timeout=shutdown_timeout,
            beat_interval=beat_interval,
            fetchers=fetchers,
            fetch_depth=fetch_depth,
            reporters=reporters,
        )
        worker.work()
    except FaktoryError as exc:
        raise click.ClickException(str(exc)) from exc
    if worker.in_progress:
        # Job threads that ignored cancellation would keep the interpreter from exiting; their jobs were FAILed.
        log.warning("exiting with %d job threads still running", worker.in_progress)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
