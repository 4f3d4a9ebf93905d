"""``celery faktory ...``: the subcommands this package adds to Celery's command line.

Celery loads every ``celery.commands`` entry point when its command line starts, so installing this package is
enough for ``celery -A proj worker`` to know the ``faktory://`` broker URL scheme (importing this module
imports :mod:`celery_faktory`, which registers the transport alias), even when ``proj`` never imports
``celery_faktory`` itself.

- ``celery faktory server``: the Faktory-compatible server (the options of ``python -m celery_faktory.server``).
- ``celery [-A proj] faktory info``: the server's version and queue sizes; the server is ``--url``, else
  ``FAKTORY_PROVIDER``/``FAKTORY_URL``, else the app's ``faktory://`` broker URL.
"""

from __future__ import annotations

import os

import click

from celery_faktory.client import Client
from celery_faktory.config import ClientConfig
from celery_faktory.errors import FaktoryError
from celery_faktory.server.__main__ import main as server_command

__all__ = ["faktory"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def faktory() -> None:
    """Faktory tools: the embedded server, and a look at a running one."""


faktory.add_command(server_command, "server")


def _app_broker_url(ctx: click.Context) -> str | None:
    """The ``-A`` app's first ``faktory://`` broker URL as a ``tcp://`` URL, when it has one."""
    app = getattr(ctx.obj, "app", None)
    url = str(getattr(getattr(app, "conf", None), "broker_url", None) or "").split(";", 1)[0]
    if not url.startswith("faktory://"):
        return None
    return "tcp://" + url[len("faktory://") :].rstrip("/")


@faktory.command()
@click.option("--url", default=None, help="Faktory URL (tcp://:password@host:port); see above for the default.")
@click.pass_context
def info(ctx: click.Context, url: str | None) -> None:
    """Print the server's version and the size of every queue."""
    if url is None and not (os.environ.get("FAKTORY_PROVIDER") or os.environ.get("FAKTORY_URL")):
        url = _app_broker_url(ctx)
    try:
        config = ClientConfig.from_url(url) if url else ClientConfig.from_env()
        with Client(config=config, max_retries=0) as client:
            document = client.info()
    except FaktoryError as exc:
        raise click.ClickException(str(exc)) from exc
    server = document.get("server", {})
    name, version = server.get("description", "Faktory"), server.get("faktory_version", "?")
    click.echo(f"{config.host}:{config.port}: {name} {version}")
    queues = document.get("faktory", {}).get("queues", {})
    if not queues:
        click.echo("no queues")
    for name in sorted(queues):
        click.echo(f"{queues[name]:>10}  {name}")
