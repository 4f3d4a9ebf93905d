"""``python -m celery_faktory.server``: run the Faktory-compatible server from the command line."""

from __future__ import annotations

import logging
import os
import ssl

import click

from celery_faktory.server import DEFAULT_PORT, FaktoryServer
from celery_faktory.server.config import ServerConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to listen on (0: any free).")
@click.option(
    "--password",
    envvar="FAKTORY_PASSWORD",
    default=None,
    help="Password clients must send (default: $FAKTORY_PASSWORD; a value starting with / names a file).",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate: serve TLS only.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key for --tls-cert.")
@click.option("--fetch-timeout", default=2.0, show_default=True, help="Seconds a FETCH waits for a job.")
@click.option("--reservation-floor", default=60.0, show_default=True, help="Shortest reservation, in seconds.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
def main(
    host: str,
    port: int,
    password: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    fetch_timeout: float,
    reservation_floor: float,
    log_level: str,
) -> None:
    """Serve the Faktory 1.9.4 work protocol from memory, for tests and local development."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if password is not None and password.startswith("/"):
        with open(password, encoding="utf-8") as handle:
            password = handle.read().strip()
    context: ssl.SSLContext | None = None
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise click.UsageError("--tls-cert and --tls-key go together")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls_cert, tls_key)
    config = ServerConfig(fetch_timeout=fetch_timeout, reservation_floor=reservation_floor)
    server = FaktoryServer(host, port, password=password or None, config=config, ssl_context=context)
    logging.getLogger("celery_faktory.server").info(
        "Faktory-compatible server on %s:%d (pid %d)%s", host, port, os.getpid(), " with TLS" if context else ""
    )
    server.serve_forever()
    logging.getLogger("celery_faktory.server").info("stopped")


if __name__ == "__main__":
    main()
