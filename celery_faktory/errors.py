"""The exception tree of ``celery_faktory``.

Every error raised by this package derives from :class:`FaktoryError`. The tree separates whose fault an
error is: :class:`InvalidCommand` means our side asked for something the protocol does not allow,
:class:`MalformedReply` means the peer sent bytes that are not Faktory's protocol, and :class:`ServerError`
carries an ``-ERR`` reply the server sent on purpose. This module imports nothing else of ours.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "EnterpriseOnly",
    "FaktoryConnectionError",
    "FaktoryError",
    "FaktoryTimeout",
    "HandshakeError",
    "InvalidCommand",
    "JobError",
    "JobRejected",
    "MalformedReply",
    "NotUnique",
    "PoolExhausted",
    "ProtocolError",
    "ServerError",
    "UnknownJobType",
    "VersionMismatch",
    "server_error",
]


class FaktoryError(Exception):
    """Root of every error raised by ``celery_faktory``."""


class ProtocolError(FaktoryError):
    """Something broke the rules of the Faktory wire protocol."""


class InvalidCommand(ProtocolError, ValueError):
    """A command could not be encoded because it would break the protocol (our side's fault)."""


class MalformedReply(ProtocolError):
    """The peer sent bytes that are not a valid Faktory reply (the peer's fault)."""


class ConfigurationError(FaktoryError, ValueError):
    """A URL, environment variable or option does not describe a usable Faktory setup."""


class FaktoryConnectionError(FaktoryError):
    """The connection to the server could not be made or was lost."""


class ConnectFailed(FaktoryConnectionError):
    """No connection to the server could be opened (refused, unreachable, TLS failure)."""


class ConnectionLost(FaktoryConnectionError):
    """An open connection broke: the server closed it or the network failed mid-command."""


class FaktoryTimeout(FaktoryConnectionError, TimeoutError):
    """The server did not answer within the read timeout."""


class PoolExhausted(FaktoryTimeout):
    """Every connection of the pool stayed in use for the whole acquire timeout."""


class HandshakeError(FaktoryConnectionError):
    """The HI/HELLO handshake did not complete."""


class AuthenticationFailed(HandshakeError):
    """The server rejected the password, or asked for one that was not configured."""


class VersionMismatch(HandshakeError):
    """The server speaks a protocol version this package does not know."""


class ServerError(FaktoryError):
    """An error reply (``-CODE message``) sent by the server.

    Attributes:
        code: The reply's code, ``"ERR"`` for every generic error.
        message: The server's text after the code, unchanged.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}" if message else code)
        self.code = code
        self.message = message


class JobRejected(ServerError):
    """The server refused a job at PUSH time (invalid JSON, missing jid, bad queue name and so on)."""


class NotUnique(ServerError):
    """Faktory Enterprise refused a job because an identical unique job is pending."""


class EnterpriseOnly(ServerError):
    """The command needs Faktory Enterprise (BATCH, TRACK on the open-source server)."""


class JobError(FaktoryError):
    """A job could not be run by this worker."""


class UnknownJobType(JobError, LookupError):
    """A fetched job's jobtype has no registered function (the job is FAILed with this errtype)."""


#: Reply codes that have a class of their own.
_CODE_CLASSES: dict[str, type[ServerError]] = {"NOTUNIQUE": NotUnique}

#: Message prefixes of ``-ERR`` replies that name a PUSH rejection.
_REJECTION_PREFIXES = (
    "invalid JSON:",
    "jobs must have",
    "jobs cannot be reserved",
    "invalid timestamp for 'at'",
    "cannot get ",
)


def server_error(code: str, message: str) -> ServerError:
    """Build the most specific :class:`ServerError` subclass for an error reply.

    Args:
        code: The reply's code (``"ERR"``, ``"NOTUNIQUE"`` ...).
        message: The text after the code.

    Returns:
        An instance of :class:`NotUnique`, :class:`EnterpriseOnly`, :class:`JobRejected` or
        :class:`ServerError`, chosen by the code first and by the message's fixed prefix second.
    """
    cls = _CODE_CLASSES.get(code)
    if cls is None:
        if message.endswith("is only available in Faktory Enterprise"):
            cls = EnterpriseOnly
        elif message.startswith(_REJECTION_PREFIXES):
            cls = JobRejected
        else:
            cls = ServerError
    return cls(code, message)
