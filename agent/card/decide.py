"""The decide stage: one patient for the whole card, or a refusal with a reason (R1-R5).

Pure logic on plain data (the scan, the identify stage's evidence, the mode and
the EHR context); no I/O, so that every rule is tested on hand-made values
(``tests/test_decide.py``).

Where the number must be (:func:`agent.card.identify.required_positions`, R3): the
first and the last picture of a photo series or video (for a clip: its first /
last seconds); every picture in assault mode; every ultrasound image and every
DICOM file. Audio carries no number: it needs the EHR context (R3, R5).

The rules, checked in this order; the first that applies refuses the card. The
order puts the most specific and most actionable message for staff first; every
refusal refuses the whole card, so the order only chooses the sentence.

1. ``EMPTY_CARD``: no media.
2. ``EHR_CONTEXT_REQUIRED``: ultrasound or audio mode, or any audio file on the
   card, without an expected patient (R3, R5). (An expected number that does not
   validate refuses as ``INVALID_ID`` here; the CLI already rejects it as usage.)
3. ``INTERNAL_ERROR``: a media file the identify stage did not examine. It always
   examines every one; if it did not, we cannot know what the card shows (R4).
4. ``FIRST_LAST_MISMATCH``: the first and the last position each show exactly
   one valid number, and they differ (R3, R4). Before MIXED_PATIENTS because it
   says precisely what is wrong and where.
5. ``MIXED_PATIENTS``: more than one distinct valid number anywhere on the card,
   in any file, frame or reader (R4). Includes two labels in one picture.
6. ``EXPECTED_PATIENT_MISMATCH``: started from the EHR and the card's one valid
   number is not the expected patient's (R5).
7. A file the identify stage could not read (its own reason: ``NOT_MEDIA`` for an
   undecodable file, ``ID_MISSING_ON_FRAME`` for DICOM frames not checked).
8. ``INVALID_ID``: a text that looks like an identity number but fails
   validation, anywhere on the card (barcode or OCR; first, last or middle). A
   smudged or misread label, a number in a reserve format not configured, or
   another patient's number read wrong: we cannot tell, so we refuse (R1)
   rather than ignore it, even when the rest of the card is consistent.
   Barcodes that hold no number-like text (a product code, a URL) are ignored.
9. ``UNREADABLE_LABEL_MID_CARD``: a middle picture or clip (where the number is
   not required), or a first/last picture beside the label it read (a second
   label), shows a label-like region from which no number could be read
   although OCR saw a number-like line there, or could not finish, or no OCR
   reader is installed (``method`` ``unread_label`` evidence, issue 12). The
   label may be another patient's; we cannot tell, so we refuse (R1, R4).
10. ``NO_ID_FOUND``: no valid number anywhere; or (photo series, video) the first
   or the last position shows none. R3 wants the label both first and last; a
   missing one is "not found" rather than "mismatch" (nothing disagrees; the
   fix is to photograph the label again), and the detail names the file.
11. ``ID_MISSING_ON_FRAME``: assault or ultrasound: a picture (or DICOM file) without
   the number; a clip whose first or last seconds do not show it (assault), or an
   ultrasound cine with a sampled frame that does not (its overlay is on every frame).

Otherwise the card is accepted for its one patient. With EHR context, audio
files get an ``EHR_CONTEXT`` evidence each, and ``ehr_context`` is set when the
patient came from the context (audio) rather than from the media alone.

``detail`` names the files concerned, for ops and for the staff screen.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agent.card.identify import IdentifyResult, VideoWindows, required_positions
from bildsluss_common.identity import numbers
from agent.card.model import Decision, Evidence, MediaKind, Method, Mode, ScanResult
from agent.card.reasons import Reason

# How many files a detail names before "and N more".
_DETAIL_FILES = 6


def canonical_expect(expect: str | None, reserve_formats: Sequence[Any] = ()) -> str | None:
    """The expected patient's canonical number, or None when it does not validate."""
    if expect is None:
        return None
    number = numbers.parse(expect, reserve_formats=reserve_formats)
    return number.canonical if number is not None else None


def decide(
    scan: ScanResult,
    identified: IdentifyResult,
    mode: Mode,
    *,
    expect: str | None,
    reserve_formats: Sequence[Any] = (),
) -> Decision:
    """Apply R1-R5 to what the card showed; see the module notes for the order."""
    evidence = identified.evidence

    def refuse(reason: Reason, detail: str, shown: Iterable[Evidence] = evidence) -> Decision:
        return Decision(patient_id=None, reason=reason, detail=detail, evidence=tuple(shown))

    media = scan.media
    if not media:
        return refuse(Reason.EMPTY_CARD, "no pictures, video, sound or DICOM files on the card")

    expected = canonical_expect(expect, reserve_formats)
    if expect is not None and expected is None:
        return refuse(Reason.INVALID_ID, f"the expected patient number {expect!r} is not valid")
    audio = [m.relative_path for m in media if m.kind == MediaKind.AUDIO]
    if expected is None and (mode in (Mode.ULTRASOUND, Mode.AUDIO) or audio):
        what = f"{mode.value} mode" if mode in (Mode.ULTRASOUND, Mode.AUDIO) else \
            f"audio files ({_files(audio)})"
        return refuse(Reason.EHR_CONTEXT_REQUIRED, f"{what} must be started from the patient's record")

    examined = set(identified.examined)
    unexamined = [m.relative_path for m in media
                  if m.kind != MediaKind.AUDIO and m.relative_path not in examined]
    if unexamined:
        return refuse(Reason.INTERNAL_ERROR, f"not examined for identity: {_files(unexamined)}")

    valid = [e for e in evidence if e.patient_id is not None]
    ids = _distinct(e.patient_id for e in valid)
    positions = required_positions(media, mode)
    windows = {v.relative_path: v for v in identified.videos}
    kinds = {m.relative_path: m.kind for m in media}

    def shown_at(path: str, position: str) -> list[Evidence]:
        return [e for e in evidence
                if e.relative_path == path and _in_window(e, position, kinds[path], windows.get(path))]

    first = next((p for p, pos in positions.items() if "first" in pos), None)
    last = next((p for p, pos in positions.items() if "last" in pos), None)
    if first is not None and last is not None:
        first_ids = _distinct(e.patient_id for e in shown_at(first, "first") if e.patient_id)
        last_ids = _distinct(e.patient_id for e in shown_at(last, "last") if e.patient_id)
        if len(first_ids) == 1 and len(last_ids) == 1 and first_ids != last_ids:
            return refuse(Reason.FIRST_LAST_MISMATCH,
                          f"first {first} shows {first_ids[0]}, last {last} shows {last_ids[0]}")

    if len(ids) > 1:
        where = "; ".join(
            f"{pid} on {_files(_distinct(e.relative_path for e in valid if e.patient_id == pid))}"
            for pid in ids)
        return refuse(Reason.MIXED_PATIENTS, f"{len(ids)} patients on the card: {where}")

    if expected is not None and ids and ids[0] != expected:
        return refuse(Reason.EXPECTED_PATIENT_MISMATCH,
                      f"the record has {expected} open, the card shows {ids[0]} "
                      f"({_files(_distinct(e.relative_path for e in valid))})")

    if identified.problems:
        p = identified.problems[0]
        rest = identified.problems[1:]
        detail = "; ".join(f"{q.relative_path}: {q.detail}" for q in (p, *rest))
        return refuse(p.reason, detail)

    invalid = [e for e in evidence if e.invalid]
    if invalid:
        return refuse(Reason.INVALID_ID, "a number that does not validate: " + "; ".join(
            f"{e.relative_path}{_frame(e)}: {e.text!r} ({e.method.value})" for e in invalid[:_DETAIL_FILES]))

    unread = [e for e in evidence if e.method == Method.UNREAD_LABEL]
    if unread:
        return refuse(Reason.UNREADABLE_LABEL_MID_CARD, "a label that could not be read: " + "; ".join(
            f"{e.relative_path}{_frame(e)}: {e.text}" for e in unread[:_DETAIL_FILES]))

    gaps = [(p, pos, part) for p, poss in positions.items() for pos in poss
            for part in _parts(pos, kinds[p], mode, windows.get(p))
            if not any(e.patient_id for e in shown_at(p, part))]
    missing = [(p, pos) for p, pos, _ in gaps]
    if not ids:
        if not positions and audio:  # an audio-only card: the context names the patient
            return _accept(identified, expected, expected, audio)
        looked = _files([m.relative_path for m in media if m.kind != MediaKind.AUDIO])
        return refuse(Reason.NO_ID_FOUND, f"no valid patient number on any file ({looked})")
    series = [(p, pos) for p, pos in missing if pos in ("first", "last")]
    if series:
        what = "; ".join(f"no patient number {_where(kinds[p], pos)} {p}" for p, pos in series)
        shown = next(((p, pos) for p, poss in positions.items() for pos in poss
                      if pos in ("first", "last") and (p, pos) not in series), None)
        if shown is not None:
            what += f" ({_where(kinds[shown[0]], shown[1])} {shown[0]} shows {ids[0]})"
        return refuse(Reason.NO_ID_FOUND, what)
    if missing:
        return refuse(Reason.ID_MISSING_ON_FRAME, "no patient number on " + _files(
            [p if kinds[p] != MediaKind.VIDEO else f"{p} ({_video_part(part)})" for p, _, part in gaps]))

    return _accept(identified, ids[0], expected, audio)


def patients_shown(evidence: Iterable[Evidence]) -> list[tuple[str, list[str]]]:
    """Which files show which valid number, when a card shows more than one patient
    (MIXED_PATIENTS, FIRST_LAST_MISMATCH): ``[(number, [file, ...]), ...]`` in the
    order read, files in capture order; empty for a card with one patient or none.
    So that staff can sort the card (issue 12); callers mask the numbers."""
    shown: dict[str, list[str]] = {}
    for e in evidence:
        if e.patient_id is not None:
            files = shown.setdefault(e.patient_id, [])
            if e.relative_path not in files:
                files.append(e.relative_path)
    return list(shown.items()) if len(shown) > 1 else []


def _accept(identified: IdentifyResult, patient: str | None, expected: str | None,
            audio: Sequence[str]) -> Decision:
    """The card's one patient. ``ehr_context``: ingest was started from the EHR and the
    card agrees with it (the archive requires it for ultrasound and audio)."""
    assert patient is not None
    context = tuple(
        Evidence(relative_path=p, frame=0, method=Method.EHR_CONTEXT, text=patient, patient_id=patient)
        for p in audio)
    return Decision(patient_id=patient, reason=None, detail="",
                    evidence=(*identified.evidence, *context), ehr_context=expected is not None)


def _parts(position: str, kind: MediaKind, mode: Mode, window: VideoWindows | None) -> tuple[str, ...]:
    """The parts of a file that must each show the number for ``position``.

    A picture is one part. A clip required "every"where (assault, ultrasound) must
    show it in its first AND its last seconds, as a photo series' first and last
    picture must (R3); an ultrasound cine carries the overlay on every frame, so
    each sampled frame must show it (``frame:N``), as each frame of a DICOM cine must.
    """
    if kind != MediaKind.VIDEO or position != "every":
        return (position,)
    if mode == Mode.ULTRASOUND and window is not None:
        return tuple(f"frame:{f}" for f in sorted({*window.head, *window.tail})) or ("first", "last")
    return ("first", "last")


def _in_window(e: Evidence, position: str, kind: MediaKind, window: VideoWindows | None) -> bool:
    """Whether the evidence was read where ``position`` asks (a video's head, tail or one frame)."""
    if kind != MediaKind.VIDEO:
        return True
    if window is None:
        return False
    if position == "first":
        return e.frame in window.head
    if position == "last":
        return e.frame in window.tail
    if position.startswith("frame:"):
        return e.frame == int(position[len("frame:"):])
    # "every" as a whole: any sampled frame; _parts splits it where a number is required.
    return e.frame in window.head or e.frame in window.tail


def _video_part(position: str) -> str:
    if position.startswith("frame:"):
        return f"frame {position[len('frame:'):]}"
    return f"its {position} seconds"


def _where(kind: MediaKind, position: str) -> str:
    if kind == MediaKind.VIDEO:
        return f"in the {position} seconds of"
    return f"on the {position} picture,"


def _frame(e: Evidence) -> str:
    return f" frame {e.frame}" if e.frame else ""


def _distinct(values: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _files(paths: Sequence[str]) -> str:
    paths = list(paths)
    if len(paths) <= _DETAIL_FILES:
        return ", ".join(paths)
    return ", ".join(paths[:_DETAIL_FILES]) + f" and {len(paths) - _DETAIL_FILES} more"
