"""Where the Faktory server is and how to talk to it: :class:`ClientConfig`.

Built from a URL (``tcp://:password@host:7419``, ``tcp+tls://...``) or from the environment the way every
Faktory client reads it: ``FAKTORY_PROVIDER`` names the variable that holds the URL, else ``FAKTORY_URL``, else
``tcp://localhost:7419``. The password never appears in ``repr`` or in :attr:`ClientConfig.safe_url`.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from celery_faktory.errors import ConfigurationError

__all__ = ["DEFAULT_URL", "ClientConfig"]

#: Where a client connects when nothing says otherwise.
DEFAULT_URL = "tcp://localhost:7419"
#: The port of a Faktory URL without one.
DEFAULT_PORT = 7419


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How to reach one Faktory server.

    Attributes:
        host: Server host name or address (IPv6 literals without brackets).
        port: Server port.
        password: The server's password, or ``None``.
        username: Sent in HELLO for proxies; Faktory ignores it.
        tls: Whether to speak TLS (the ``tcp+tls`` scheme).
        tls_verify: Check the server's certificate and host name (on by default).
        tls_ca: A CA bundle (PEM file) to trust instead of the system's.
        tls_cert: A client certificate (PEM file), for servers that ask for one.
        tls_key: The client certificate's private key (PEM file).
        connect_timeout: Seconds to open a connection and finish the handshake.
        read_timeout: Seconds to wait for a reply; must stay above the server's 2 s FETCH block.
        hostname: The local host name sent in HELLO.
        labels: Labels a worker shows on the server's Busy page.
    """

    host: str = "localhost"
    port: int = DEFAULT_PORT
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    hostname: str = field(default_factory=socket.gethostname)
    labels: tuple[str, ...] = ("python",)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"port must be between 1 and 65535, got {self.port}")
        if self.read_timeout <= 2.0:
            raise ConfigurationError("read_timeout must be above 2 s, the server's FETCH block")
        if self.tls_key and not self.tls_cert:
            raise ConfigurationError("tls_key needs tls_cert")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ClientConfig:
        """Parse ``tcp://[user][:password]@host[:port]`` or ``tcp+tls://...``; options override the URL.

        Raises:
            ConfigurationError: The URL is not a Faktory URL.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"invalid Faktory URL: {exc}") from exc
        if parts.scheme not in ("tcp", "tcp+tls"):
            raise ConfigurationError(f"a Faktory URL starts with tcp:// or tcp+tls://, got {_mask(url)!r}")
        if not parts.hostname:
            raise ConfigurationError(f"the Faktory URL {_mask(url)!r} names no host")
        values: dict[str, Any] = {
            "host": parts.hostname,
            "port": port or DEFAULT_PORT,
            "password": unquote(parts.password) if parts.password is not None else None,
            "username": unquote(parts.username) if parts.username else None,
            "tls": parts.scheme == "tcp+tls",
        }
        values.update(options)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> ClientConfig:
        """Read ``FAKTORY_PROVIDER`` / ``FAKTORY_URL`` as the Go and Ruby clients do.

        Raises:
            ConfigurationError: ``FAKTORY_PROVIDER`` holds a URL instead of a variable name, or names an unset
                variable.
        """
        env = os.environ if environ is None else environ
        provider = env.get("FAKTORY_PROVIDER")
        if provider:
            if ":" in provider:
                raise ConfigurationError(
                    "FAKTORY_PROVIDER must name the environment variable that holds the URL "
                    "(for example FAKTORY_PROVIDER=FAKTORYTOGO_URL), not hold a URL"
                )
            url = env.get(provider)
            if not url:
                raise ConfigurationError(f"FAKTORY_PROVIDER names {provider}, which is not set")
        else:
            url = env.get("FAKTORY_URL") or DEFAULT_URL
        if env.get("FAKTORY_DISABLE_HOSTNAME_VERIFICATION"):
            options.setdefault("tls_verify", False)
        return cls.from_url(url, **options)

    @classmethod
    def resolve(cls, url: str | None = None, **options: Any) -> ClientConfig:
        """A config from ``url`` if given, else from the environment; keyword options override both."""
        return cls.from_url(url, **options) if url else cls.from_env(**options)

    def with_options(self, **changes: Any) -> ClientConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def url(self) -> str:
        """The URL, password included."""
        return self._url(self.password)

    @property
    def safe_url(self) -> str:
        """The URL with the password masked, for logs and messages."""
        return self._url(None if self.password is None else "***")

    def _url(self, password: str | None) -> str:
        auth = quote(self.username or "", safe="")
        if password is not None:
            auth += ":" + (password if password == "***" else quote(password, safe=""))
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "tcp+tls" if self.tls else "tcp"
        return f"{scheme}://{auth + '@' if auth else ''}{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context this config asks for, or ``None`` for plain TCP."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def _mask(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
