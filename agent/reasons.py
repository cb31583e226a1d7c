"""Stable reason codes and the sentence staff see for each.

The codes are part of the command-line contract (README, "Reason codes"): never
rename one and never reuse one for another meaning; add new ones at the end.
"""
from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    MIXED_PATIENTS = "MIXED_PATIENTS"
    FIRST_LAST_MISMATCH = "FIRST_LAST_MISMATCH"
    NO_ID_FOUND = "NO_ID_FOUND"
    ID_MISSING_ON_FRAME = "ID_MISSING_ON_FRAME"
    INVALID_ID = "INVALID_ID"
    EXPECTED_PATIENT_MISMATCH = "EXPECTED_PATIENT_MISMATCH"
    EHR_CONTEXT_REQUIRED = "EHR_CONTEXT_REQUIRED"
    UNREGISTERED_DEVICE = "UNREGISTERED_DEVICE"
    NOT_MEDIA = "NOT_MEDIA"
    UNSAFE_PATH = "UNSAFE_PATH"
    STRIP_FAILED = "STRIP_FAILED"
    EMPTY_CARD = "EMPTY_CARD"
    ARCHIVE_UNAVAILABLE = "ARCHIVE_UNAVAILABLE"
    ARCHIVE_REJECTED = "ARCHIVE_REJECTED"
    CARD_REMOVED = "CARD_REMOVED"
    # Added by Bildsluss beyond the original contract list:
    CARD_CHANGED = "CARD_CHANGED"
    WIPE_FAILED = "WIPE_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    def __str__(self) -> str:  # so f"{reason}" prints the code
        return self.value


# One sentence per reason, for a nurse at the capture PC. Say what happened,
# that the card is safe, and what to do next.
STAFF_MESSAGES: dict[Reason, str] = {
    Reason.MIXED_PATIENTS: (
        "The card holds pictures of more than one patient. Nothing was sent and "
        "nothing was deleted; sort the card so it holds one patient only."
    ),
    Reason.FIRST_LAST_MISMATCH: (
        "The patient label in the first and the last picture do not match. "
        "Nothing was sent and nothing was deleted; check the label and photograph it again."
    ),
    Reason.NO_ID_FOUND: (
        "No patient number could be read from the first and last pictures. "
        "Nothing was sent and nothing was deleted; photograph the patient label "
        "first and last, sharp and close, and try again."
    ),
    Reason.ID_MISSING_ON_FRAME: (
        "In assault documentation every picture must show the patient number, "
        "and at least one does not. Nothing was sent and nothing was deleted."
    ),
    Reason.INVALID_ID: (
        "A number on the card looks like a patient number but is not valid. "
        "Nothing was sent and nothing was deleted; check the patient label."
    ),
    Reason.EXPECTED_PATIENT_MISMATCH: (
        "The card shows a different patient than the one open in the health record. "
        "Nothing was sent and nothing was deleted; check that you have the right patient."
    ),
    Reason.EHR_CONTEXT_REQUIRED: (
        "This kind of media must be imported from the patient's health record. "
        "Nothing was sent and nothing was deleted; start the import from the record."
    ),
    Reason.UNREGISTERED_DEVICE: (
        "The card holds media from a device that is not registered for this department "
        "(for example a private phone). Nothing was sent and nothing was deleted."
    ),
    Reason.NOT_MEDIA: (
        "The card holds a file that is not a picture, video or sound recording. "
        "Nothing was sent and nothing was deleted; ask IT to check the card."
    ),
    Reason.UNSAFE_PATH: (
        "The card holds a link or special file that is not allowed. "
        "Nothing was sent and nothing was deleted; ask IT to check the card."
    ),
    Reason.STRIP_FAILED: (
        "Hidden information could not be removed safely from a file. "
        "Nothing was sent and nothing was deleted; ask IT for help."
    ),
    Reason.EMPTY_CARD: "The card holds no pictures, video or sound. Nothing was done.",
    Reason.ARCHIVE_UNAVAILABLE: (
        "The image archive cannot be reached right now. Nothing was deleted; "
        "keep the card and do not reuse it until the upload has been done."
    ),
    Reason.ARCHIVE_REJECTED: (
        "The image archive refused the upload. Nothing was deleted; "
        "keep the card and contact IT."
    ),
    Reason.CARD_REMOVED: (
        "The card was removed before the work was done. Nothing was deleted; "
        "put the card back in to try again."
    ),
    Reason.CARD_CHANGED: (
        "Files on the card changed while they were being read. Nothing was deleted; "
        "put the card back in to try again."
    ),
    Reason.WIPE_FAILED: (
        "The pictures are safely in the archive, but some could not be deleted "
        "from the card. Do not reuse the card; ask IT for help."
    ),
    Reason.INTERNAL_ERROR: (
        "Something went wrong in the import program. Nothing was deleted; "
        "keep the card and contact IT."
    ),
}


def staff_message(reason: Reason) -> str:
    return STAFF_MESSAGES[reason]
