"""The HI/HELLO handshake: the greeting, the HELLO payload and the password hash.

The server greets with ``+HI {"v":2}``, or ``+HI {"v":2,"i":<iterations>,"s":"<salt>"}`` when it wants a
password. The client proves it knows the password by sending ``pwdhash``: SHA-256 applied ``i`` times to the
UTF-8 bytes of password + salt, in lowercase hexadecimal. A HELLO without ``v``, or with ``v`` below 2, is
checked against a single application, whatever ``i`` said (Faktory's compatibility rule).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from celery_faktory.errors import AuthenticationFailed, MalformedReply, VersionMismatch
from celery_faktory.protocol.encoding import dumps

__all__ = [
    "PROTOCOL_VERSION",
    "Greeting",
    "encode_greeting",
    "expected_password_hash",
    "hello_payload",
    "parse_greeting",
    "password_hash",
]

#: The protocol version this package speaks and sends in HELLO.
PROTOCOL_VERSION = 2


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's ``HI`` greeting.

    Attributes:
        version: The protocol version the server speaks.
        iterations: How many SHA-256 applications the password hash needs, or ``None`` without a password.
        salt: The salt to hash with, or ``None`` without a password.
    """

    version: int
    iterations: int | None = None
    salt: str | None = None

    @property
    def requires_password(self) -> bool:
        """Whether the server asked for a password hash."""
        return self.iterations is not None


def parse_greeting(text: str) -> Greeting:
    """Parse the text of the greeting's simple-string reply (``HI {...}``).

    Raises:
        MalformedReply: The text is not a Faktory greeting.
        VersionMismatch: The server speaks a protocol version other than 2.
    """
    if not text.startswith("HI "):
        raise MalformedReply(f"expected the HI greeting, got {text[:80]!r}")
    try:
        data = json.loads(text[3:])
    except ValueError as exc:
        raise MalformedReply(f"greeting is not JSON: {text[:80]!r}") from exc
    if not isinstance(data, dict):
        raise MalformedReply(f"greeting is not a JSON object: {text[:80]!r}")
    version = data.get("v")
    if not _is_int(version):
        raise MalformedReply(f"greeting has no protocol version: {text[:80]!r}")
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(f"server speaks protocol version {version}, this client speaks {PROTOCOL_VERSION}")
    iterations, salt = data.get("i"), data.get("s")
    if iterations is None and salt is None:
        return Greeting(version)
    if not _is_int(iterations) or iterations < 1 or not isinstance(salt, str):
        raise MalformedReply(f"greeting has an invalid password challenge: {text[:80]!r}")
    return Greeting(version, iterations, salt)


def encode_greeting(iterations: int | None = None, salt: str | None = None) -> bytes:
    """Encode the greeting a server sends; give both ``iterations`` and ``salt`` to ask for a password."""
    payload: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if iterations is not None and salt is not None:
        payload["i"] = iterations
        payload["s"] = salt
    return b"+HI " + dumps(payload).encode() + b"\r\n"


def password_hash(password: str, salt: str, iterations: int) -> str:
    """SHA-256 of password + salt, applied ``iterations`` times in all, as lowercase hex.

    Raises:
        ValueError: ``iterations`` is below 1.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    digest = hashlib.sha256(password.encode() + salt.encode()).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def expected_password_hash(password: str, salt: str, iterations: int, client_version: int) -> str:
    """The ``pwdhash`` a server accepts from a client that sent ``v`` = ``client_version`` (0 when absent)."""
    return password_hash(password, salt, iterations if client_version >= PROTOCOL_VERSION else 1)


def hello_payload(
    greeting: Greeting,
    *,
    hostname: str,
    password: str | None = None,
    wid: str | None = None,
    pid: int | None = None,
    labels: Sequence[str] = (),
    username: str | None = None,
) -> dict[str, Any]:
    """Build the HELLO payload answering ``greeting``.

    ``wid``, ``pid`` and ``labels`` are sent only for a worker (a non-empty ``wid``): without one, the
    connection is a producer's.

    Raises:
        AuthenticationFailed: The server asked for a password and none was given.
    """
    payload: dict[str, Any] = {"v": PROTOCOL_VERSION, "hostname": hostname}
    if wid:
        payload["wid"] = wid
        if pid is not None:
            payload["pid"] = pid
        payload["labels"] = list(labels)
    if username:
        payload["username"] = username
    if greeting.iterations is not None and greeting.salt is not None:
        if password is None:
            raise AuthenticationFailed("the Faktory server requires a password and none was configured")
        payload["pwdhash"] = password_hash(password, greeting.salt, greeting.iterations)
    return payload


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
