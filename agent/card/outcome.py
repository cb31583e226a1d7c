"""How a card ends: one vocabulary and one table, for the CLI, the daemon and the desk.

A card ends ``archived`` (confirmed; wiped or not), ``refused`` (nothing was
sent, or the archive refused it; the card is untouched), ``deferred`` (the
archive is unreachable, or the PC's spool has no room; the card is untouched and is
tried again) or ``failed``
(something went wrong that is not the card's fault; the card is untouched).
Which one follows from the reason and from how far the card got
(:func:`outcome_of`); nowhere else maps reasons to outcomes.
"""
from __future__ import annotations

import enum

from agent.card.reasons import Reason


class Outcome(str, enum.Enum):
    ARCHIVED = "archived"
    REFUSED = "refused"
    DEFERRED = "deferred"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class FileStatus(str, enum.Enum):
    ARCHIVED = "archived"
    REFUSED = "refused"
    IGNORED = "ignored"  # housekeeping the card path does not take (thumbnails, system files)
    PENDING = "pending"  # on the card still; not archived (deferred, failed) or not wiped

    def __str__(self) -> str:
        return self.value


class Phase(enum.Enum):
    """How far a card got when it stopped: it decides what a reason means."""

    READING = "reading"  # scan .. strip: nothing has left the PC
    SENDING = "sending"  # upload and commit: the archive may refuse or be unreachable
    COMMITTED = "committed"  # the archive committed; its receipts are being checked
    CONFIRMED = "confirmed"  # every receipt checked: the media is archived (R10)


# Reasons that are not the card's fault, before the archive confirmed the card.
# Every other reason refuses the card.
_NOT_REFUSALS: dict[Reason, Outcome] = {
    Reason.ARCHIVE_UNAVAILABLE: Outcome.DEFERRED,
    Reason.SPOOL_FULL: Outcome.DEFERRED,  # the PC's disk, not the card: it waits untouched
    Reason.CARD_REMOVED: Outcome.FAILED,
    Reason.CARD_CHANGED: Outcome.FAILED,
    Reason.INTERNAL_ERROR: Outcome.FAILED,
}

EXIT_CODES: dict[Outcome, int] = {
    Outcome.ARCHIVED: 0, Outcome.FAILED: 1, Outcome.REFUSED: 3, Outcome.DEFERRED: 4,
}
# Archived, but the card could not be (fully) wiped: the media is safe in the
# archive, the card must not be reused yet. An extension of the contract.
EXIT_ARCHIVED_NOT_WIPED = 5

# What each media file on the card is, for the card's outcome.
FILE_STATUS: dict[Outcome, FileStatus] = {
    Outcome.ARCHIVED: FileStatus.ARCHIVED,
    Outcome.REFUSED: FileStatus.REFUSED,
    Outcome.DEFERRED: FileStatus.PENDING,
    Outcome.FAILED: FileStatus.PENDING,
}


def outcome_of(reason: Reason, phase: Phase) -> Outcome:
    """The card's outcome when it stops for ``reason`` in ``phase``.

    Once confirmed, the media is archived whatever stops the wipe. When the
    archive committed but its receipts do not check out, the card failed: it is
    left as it is and IT must look (it is neither refused nor the card's fault).
    """
    if phase is Phase.CONFIRMED:
        return Outcome.ARCHIVED
    if phase is Phase.COMMITTED and reason is not Reason.ARCHIVE_UNAVAILABLE:
        return Outcome.FAILED
    return _NOT_REFUSALS.get(reason, Outcome.REFUSED)


def exit_code(outcome: Outcome, wiped: bool) -> int:
    if outcome is Outcome.ARCHIVED and not wiped:
        return EXIT_ARCHIVED_NOT_WIPED
    return EXIT_CODES[outcome]
