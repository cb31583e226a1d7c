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
    EHR_CONTEXT_EXPIRED = "EHR_CONTEXT_EXPIRED"
    # Media recognised but not taken (issue 4, helper E): HEIC/HEIF.
    FORMAT_NOT_ACCEPTED = "FORMAT_NOT_ACCEPTED"
    # The daemon (issue 5): the card's file system cannot be mounted or read.
    CARD_UNREADABLE = "CARD_UNREADABLE"
    # Issue 17: the capture PC's spool has no room for the card's stripped copies.
    SPOOL_FULL = "SPOOL_FULL"
    # Issue 12: a middle picture (or clip) shows a label-like region whose number
    # could not be read: it may be another patient's label (R4).
    UNREADABLE_LABEL_MID_CARD = "UNREADABLE_LABEL_MID_CARD"

    def __str__(self) -> str:  # so f"{reason}" prints the code
        return self.value


# One sentence per reason, for a nurse at the capture PC. Say what happened,
# that the card is safe, and what to do next.
STAFF_MESSAGES: dict[Reason, str] = {
    Reason.FORMAT_NOT_ACCEPTED: (
        "The card holds pictures in a format the archive cannot take safely (HEIC/HEIF). "
        "Nothing was sent and nothing was deleted; set the camera to JPEG and take them again."
    ),
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
    Reason.EHR_CONTEXT_EXPIRED: (
        "The patient chosen in the health record was chosen too long ago. Nothing was "
        "sent and nothing was deleted; start the capture again from the patient's record."
    ),
    Reason.CARD_UNREADABLE: (
        "The card could not be read (its file system is damaged or of an unknown kind). "
        "Nothing was sent and nothing was deleted; try the card in another reader or ask IT."
    ),
    Reason.SPOOL_FULL: (
        "This computer has no room left to prepare the pictures. Nothing was sent and "
        "nothing was deleted; keep the card, do not reuse it, and contact IT."
    ),
    Reason.UNREADABLE_LABEL_MID_CARD: (
        "A picture on the card shows a patient label whose number or barcode could not be read (in "
        "the middle of the card, or a second label beside the patient's), so it may belong to another "
        "patient. "
        "Nothing was sent and nothing was deleted; look at that picture, remove it if it shows "
        "another patient, or photograph the label again sharp and close."
    ),
}


# Where a reason means something different per mode, each mode has its own
# sentence (keyed by the mode's value, so that this module needs no model import).
# ID_MISSING_ON_FRAME: assault wants the label on every picture, ultrasound the
# overlay on every image and cine, any mode every frame of a DICOM file.
MODE_MESSAGES: dict[tuple[Reason, str], str] = {
    (Reason.ID_MISSING_ON_FRAME, "assault"): STAFF_MESSAGES[Reason.ID_MISSING_ON_FRAME],
    (Reason.ID_MISSING_ON_FRAME, "ultrasound"): (
        "In ultrasound mode every image and clip must show the patient number in the machine's "
        "overlay, and at least one does not. Nothing was sent and nothing was deleted; "
        "check that the patient is registered on the machine and export again."
    ),
}
STAFF_MESSAGES[Reason.ID_MISSING_ON_FRAME] = (
    "Every picture or frame must show the patient number here, and at least one does not. "
    "Nothing was sent and nothing was deleted."
)


def staff_message(reason: Reason, mode: str | None = None) -> str:
    """The sentence for staff; ``mode`` (a Mode or its value) picks the mode's own where it has one."""
    key = getattr(mode, "value", mode)
    return MODE_MESSAGES.get((reason, key or ""), STAFF_MESSAGES[reason])


# The same for the screens staff look at on the capture PC (status page, desktop
# notifications, `bildsluss-agent status`), which speak Swedish. TITLES_SV is the
# few words after "Nekat:" / "Väntar:"; STAFF_MESSAGES_SV the full sentence.
TITLES_SV: dict[Reason, str] = {
    Reason.MIXED_PATIENTS: "flera patienter på kortet",
    Reason.FIRST_LAST_MISMATCH: "första och sista bilden visar olika patienter",
    Reason.NO_ID_FOUND: "inget personnummer hittades",
    Reason.ID_MISSING_ON_FRAME: "personnumret saknas på en bild",
    Reason.INVALID_ID: "ogiltigt personnummer",
    Reason.EXPECTED_PATIENT_MISMATCH: "fel patient",
    Reason.EHR_CONTEXT_REQUIRED: "måste startas från journalen",
    Reason.UNREGISTERED_DEVICE: "okänd kamera eller telefon",
    Reason.NOT_MEDIA: "kortet har filer som inte är bild, film eller ljud",
    Reason.UNSAFE_PATH: "otillåten fil på kortet",
    Reason.STRIP_FAILED: "dold information kunde inte tas bort",
    Reason.EMPTY_CARD: "kortet är tomt",
    Reason.ARCHIVE_UNAVAILABLE: "arkivet nås inte",
    Reason.ARCHIVE_REJECTED: "arkivet tog inte emot bilderna",
    Reason.CARD_REMOVED: "kortet togs ur för tidigt",
    Reason.CARD_CHANGED: "filerna ändrades under läsningen",
    Reason.WIPE_FAILED: "kortet kunde inte tömmas",
    Reason.INTERNAL_ERROR: "fel i importprogrammet",
    Reason.EHR_CONTEXT_EXPIRED: "patientvalet i journalen är för gammalt",
    Reason.CARD_UNREADABLE: "kortet kan inte läsas",
    Reason.FORMAT_NOT_ACCEPTED: "bildformatet tas inte emot (HEIC/HEIF)",
    Reason.SPOOL_FULL: "datorn har inte plats för bilderna",
    Reason.UNREADABLE_LABEL_MID_CARD: "oläslig patientetikett på kortet",
}

STAFF_MESSAGES_SV: dict[Reason, str] = {
    Reason.MIXED_PATIENTS: (
        "Kortet har bilder på mer än en patient. Inget skickades och inget raderades; "
        "sortera kortet så att det bara har en patient."
    ),
    Reason.FIRST_LAST_MISMATCH: (
        "Patientetiketten på första och sista bilden stämmer inte överens. Inget skickades "
        "och inget raderades; kontrollera etiketten och fotografera den igen."
    ),
    Reason.NO_ID_FOUND: (
        "Inget personnummer kunde läsas på första och sista bilden. Inget skickades och inget "
        "raderades; fotografera patientetiketten först och sist, skarpt och nära, och försök igen."
    ),
    Reason.ID_MISSING_ON_FRAME: (
        "Vid dokumentation av misshandel ska varje bild visa personnumret, och minst en gör "
        "det inte. Inget skickades och inget raderades."
    ),
    Reason.INVALID_ID: (
        "Ett nummer på kortet ser ut som ett personnummer men är inte giltigt. Inget skickades "
        "och inget raderades; kontrollera patientetiketten."
    ),
    Reason.EXPECTED_PATIENT_MISMATCH: (
        "Kortet visar en annan patient än den som är öppen i journalen. Inget skickades och "
        "inget raderades; kontrollera att du har rätt patient."
    ),
    Reason.EHR_CONTEXT_REQUIRED: (
        "Den här sortens bilder eller ljud måste importeras från patientens journal. Inget "
        "skickades och inget raderades; starta importen från journalen."
    ),
    Reason.UNREGISTERED_DEVICE: (
        "Kortet har bilder från en apparat som inte är registrerad för avdelningen (till "
        "exempel en privat telefon). Inget skickades och inget raderades."
    ),
    Reason.NOT_MEDIA: (
        "Kortet har en fil som inte är bild, film eller ljud. Inget skickades och inget "
        "raderades; be IT kontrollera kortet."
    ),
    Reason.UNSAFE_PATH: (
        "Kortet har en länk eller specialfil som inte är tillåten. Inget skickades och inget "
        "raderades; be IT kontrollera kortet."
    ),
    Reason.STRIP_FAILED: (
        "Dold information kunde inte tas bort säkert från en fil. Inget skickades och inget "
        "raderades; be IT om hjälp."
    ),
    Reason.EMPTY_CARD: "Kortet har inga bilder, filmer eller ljud. Inget gjordes.",
    Reason.ARCHIVE_UNAVAILABLE: (
        "Bildarkivet nås inte just nu. Inget raderades; behåll kortet och använd det inte "
        "igen förrän bilderna har skickats."
    ),
    Reason.ARCHIVE_REJECTED: (
        "Bildarkivet tog inte emot bilderna. Inget raderades; behåll kortet och kontakta IT."
    ),
    Reason.CARD_REMOVED: (
        "Kortet togs ur innan arbetet var klart. Inget raderades; sätt i kortet igen för att "
        "fortsätta."
    ),
    Reason.CARD_CHANGED: (
        "Filer på kortet ändrades medan de lästes. Inget raderades; sätt i kortet igen för att "
        "försöka på nytt."
    ),
    Reason.WIPE_FAILED: (
        "Bilderna finns säkert i arkivet, men några kunde inte raderas från kortet. Använd "
        "inte kortet igen; be IT om hjälp."
    ),
    Reason.INTERNAL_ERROR: (
        "Något gick fel i importprogrammet. Inget raderades; behåll kortet och kontakta IT."
    ),
    Reason.EHR_CONTEXT_EXPIRED: (
        "Patienten valdes i journalen för för länge sedan. Inget skickades och inget raderades; "
        "starta fotograferingen igen från patientens journal."
    ),
    Reason.FORMAT_NOT_ACCEPTED: (
        "Kortet har bilder i ett format som arkivet inte kan ta emot säkert (HEIC/HEIF). Inget "
        "skickades och inget raderades; ställ in kameran på JPEG och ta bilderna igen."
    ),
    Reason.SPOOL_FULL: (
        "Datorn har inte plats att förbereda bilderna. Inget skickades och inget raderades; "
        "behåll kortet, använd det inte igen och kontakta IT."
    ),
    Reason.UNREADABLE_LABEL_MID_CARD: (
        "En bild på kortet visar en patientetikett vars nummer eller streckkod inte gick att läsa "
        "(mitt på kortet, eller en andra etikett bredvid patientens), så den kan höra till en annan "
        "patient. Inget skickades "
        "och inget raderades; titta på bilden, ta bort den om den visar en annan patient, eller "
        "fotografera etiketten igen skarpt och nära."
    ),
}

STAFF_MESSAGES_SV[Reason.CARD_UNREADABLE] = (
    "Kortet kunde inte läsas (filsystemet är skadat eller av okänt slag). Inget skickades och "
    "inget raderades; prova kortet i en annan läsare eller be IT om hjälp."
)


MODE_MESSAGES_SV: dict[tuple[Reason, str], str] = {
    (Reason.ID_MISSING_ON_FRAME, "assault"): STAFF_MESSAGES_SV[Reason.ID_MISSING_ON_FRAME],
    (Reason.ID_MISSING_ON_FRAME, "ultrasound"): (
        "Vid ultraljud ska varje bild och film visa personnumret i apparatens text, och minst en "
        "gör det inte. Inget skickades och inget raderades; kontrollera att patienten är vald i "
        "apparaten och exportera igen."
    ),
}
STAFF_MESSAGES_SV[Reason.ID_MISSING_ON_FRAME] = (
    "Varje bild eller bildruta ska här visa personnumret, och minst en gör det inte. Inget "
    "skickades och inget raderades."
)


def staff_message_sv(reason: Reason, mode: str | None = None) -> str:
    """The Swedish sentence (the mode's own where it has one); the English one if a new reason has none yet."""
    key = getattr(mode, "value", mode)
    return (MODE_MESSAGES_SV.get((reason, key or "")) or STAFF_MESSAGES_SV.get(reason)
            or staff_message(reason, mode))


def title_sv(reason: Reason) -> str:
    return TITLES_SV.get(reason) or reason.value
