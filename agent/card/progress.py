"""What a card run tells whoever runs it, and how it is asked to stop.

:func:`agent.card.pipeline.ingest_card` reports two kinds of things to a
:class:`CardProgress`:

* :meth:`~CardProgress.stage`: progress for people (files and bytes of a
  stage), as often as it likes; nothing depends on it;
* :meth:`~CardProgress.reached`: a :class:`Checkpoint` when a step has
  finished and before the next one starts, with what the step established.
  The daemon's journal writes it down (write-ahead), so that a card resumes
  after a crash from the last checkpoint (:class:`Resume`).

Between steps the pipeline asks :meth:`~CardProgress.should_stop`; a
:class:`Stop` ends the card with its reason (a card pulled out, the agent
stopping). Plain data only: this module knows nothing of journals or boards.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, Protocol

from agent.card.model import Decision, MediaKind, StrippedFile
from agent.card.reasons import Reason


@dataclasses.dataclass(frozen=True)
class SentFile:
    """What was sent for one file: enough to check a receipt again after a restart,
    when the original may already be wiped and the spool copy gone."""

    relative_path: str
    sha256: str  # of the stripped bytes: the blob's name in the archive
    size: int
    kind: MediaKind
    media_type: str
    original_sha256: str
    original_size: int

    @classmethod
    def of(cls, stripped: StrippedFile) -> SentFile:
        source = stripped.source
        return cls(source.relative_path, stripped.sha256, stripped.size, source.kind, source.media_type,
                   source.sha256, source.size)


class Checkpoint:
    """A step has finished; ``state`` names the journal state it reaches."""

    state: ClassVar[str]


@dataclasses.dataclass(frozen=True)
class Scanned(Checkpoint):
    state: ClassVar[str] = "scanned"
    manifest: Mapping[str, str]  # relative path -> SHA-256 of the original


@dataclasses.dataclass(frozen=True)
class Identified(Checkpoint):
    state: ClassVar[str] = "identified"


@dataclasses.dataclass(frozen=True)
class Decided(Checkpoint):
    state: ClassVar[str] = "decided"
    decision: Decision


@dataclasses.dataclass(frozen=True)
class Stripped(Checkpoint):
    state: ClassVar[str] = "stripped"
    session_id: str
    sent: tuple[SentFile, ...]


@dataclasses.dataclass(frozen=True)
class Uploading(Checkpoint):
    state: ClassVar[str] = "uploading"
    session_id: str


@dataclasses.dataclass(frozen=True)
class Confirmed(Checkpoint):
    state: ClassVar[str] = "confirmed"
    case_id: str


@dataclasses.dataclass(frozen=True)
class Wiped(Checkpoint):
    state: ClassVar[str] = "wiped"


@dataclasses.dataclass(frozen=True)
class Stop:
    """Why the card must stop. ``now``: at once, even inside a step (the card is
    gone); otherwise at the next checkpoint (the agent is stopping: the card
    resumes from the journal on the next start)."""

    reason: Reason
    detail: str
    now: bool = False


@dataclasses.dataclass(frozen=True)
class Resume:
    """What an earlier, interrupted run of the same card established (from the journal)."""

    originals: Mapping[str, str]  # relative path -> SHA-256 of the original, as first scanned
    decision: Decision | None = None  # the accepted decision, reused when the card is unchanged
    confirmed: bool = False  # the archive confirmed every file: the card may be half wiped
    session_id: str | None = None
    sent: tuple[SentFile, ...] = ()


class CardProgress(Protocol):
    def stage(self, stage: str, info: Mapping[str, object]) -> None:
        """Progress of a stage, for people: ``{"files": n}``, ``{"files_done", "bytes_done", …}``."""

    def reached(self, checkpoint: Checkpoint) -> None:
        """A step finished; write down what it established before the next one starts."""

    def should_stop(self) -> Stop | None:
        """None to go on; a :class:`Stop` to end the card."""


class NoProgress:
    """Nobody listening, nothing to write down, never asked to stop (the foreground CLI)."""

    def stage(self, stage: str, info: Mapping[str, object]) -> None:
        pass

    def reached(self, checkpoint: Checkpoint) -> None:
        pass

    def should_stop(self) -> Stop | None:
        return None
