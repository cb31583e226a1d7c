"""Domain errors of the archive, each with the one gRPC status it maps to.

Raised by the archive's modules (blob store, ingest, cases) and translated to a
gRPC status in exactly one place, :class:`archive_server.interceptor.ErrorInterceptor`,
and to a one-line message with exit code 1 by the command line. Each class says
when it is raised and what the caller should do.
"""
from __future__ import annotations


class ArchiveError(Exception):
    """Base class. ``code`` is the name of the gRPC status code it maps to."""

    code = "INTERNAL"


class InvalidArgument(ArchiveError):
    """A malformed request (bad id, digest, path, mode). Retrying will not help."""

    code = "INVALID_ARGUMENT"


class NotFound(ArchiveError):
    """An unknown session, case or blob."""

    code = "NOT_FOUND"


class AlreadyExists(ArchiveError):
    """A session id that is already known with different content."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(ArchiveError):
    """Well formed but not allowed now: a blob outside the manifest, a commit
    with blobs missing, a refused department, a destination file that exists."""

    code = "FAILED_PRECONDITION"


class OutOfRange(ArchiveError):
    """A Write at an offset other than the committed size; resume from ``committed_size``."""

    code = "OUT_OF_RANGE"

    def __init__(self, message: str, committed_size: int) -> None:
        super().__init__(message)
        self.committed_size = committed_size


class Aborted(ArchiveError):
    """A concurrent operation on the same thing is in the way (a purge deleting
    the blob being uploaded). Retry with backoff; the other one finishes soon."""

    code = "ABORTED"


class DataLoss(ArchiveError):
    """Stored bytes do not match their declared SHA-256 or size. The partial
    upload has been discarded; send the blob again from offset 0."""

    code = "DATA_LOSS"


class ResourceExhausted(ArchiveError):
    """An agent (or all of them) holds as much of the archive as it may at once:
    open sessions, declared bytes, concurrent uploads (``limits``). Retry with
    backoff, after committing what is open."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(ArchiveError):
    """Storage or database cannot serve now. Retry with backoff."""

    code = "UNAVAILABLE"


class ConfigError(Exception):
    """The configuration file or a flag is wrong; the message names the key."""


class AgentRefused(ArchiveError):
    """An agent's call refused on its certificate (issue 10). ``reason`` is a
    stable code, ``audit`` what the refusal's audit event records (the
    certificate's fingerprint, what the request claimed). The agent reports
    ARCHIVE_REJECTED and leaves the card; IT fixes the binding or the agent's
    configuration (docs/security.md)."""

    def __init__(self, reason: str, message: str, **audit: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.audit = audit


class AgentUnauthenticated(AgentRefused):
    """The certificate names no agent: none presented, not bound, or revoked."""

    code = "UNAUTHENTICATED"


class AgentNotPermitted(AgentRefused):
    """The certificate's agent asked for what is not its own: another agent
    id, another department, another agent's session."""

    code = "PERMISSION_DENIED"
