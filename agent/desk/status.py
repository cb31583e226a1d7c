"""What the daemon is doing, as one thread-safe board of plain data.

The daemon reports every card event here (detected, journal state changes,
pipeline progress, finished, deferred) and the archive's reachability; the
readers of the board (``bildsluss-agent status``, the local status page,
desktop notifications, heartbeats) only ever see :meth:`StatusBoard.snapshot`,
a JSON-able dict, or the same snapshot pushed to a :meth:`subscribe` queue on
every change.

Patient numbers never reach the board unmasked: staff at the PC need to see
*that* the right patient was filed ("19121212-****" is enough to spot a wrong
label), nobody walking past needs the whole number, and heartbeats must carry
none at all. See :func:`mask_patient`.
"""
from __future__ import annotations

import collections
import copy
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from bildsluss_common.identity.masking import mask_numbers_in_text, mask_patient
from agent.card.reasons import Reason, staff_message_sv, title_sv

log = logging.getLogger(__name__)

RECENT_KEPT = 20
# A subscriber that falls this far behind loses its oldest snapshots: the page
# and the notifier only ever need the latest state.
SUBSCRIBER_BACKLOG = 64

# Journal states in which a card is being worked on (in a reader, not queued).
ACTIVE_STATES = ("detected", "scanned", "identified", "decided", "stripped", "uploading", "confirmed", "wiped")
_PROGRESS_KEYS = ("files_done", "files_total", "bytes_done", "bytes_total")
_OUTCOME_COUNTS = {"archived": "archived", "refused": "refused", "deferred": "deferred", "failed": "failed"}


def _masked_info(info: dict[str, Any]) -> dict[str, Any]:
    """Keep JSON-able scalars; mask anything that names a patient."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if "patient" in key or key in ("expect", "expected"):
            out[key] = mask_patient(str(value)) if value else None
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        else:
            out[key] = str(value)
    return out


class StatusBoard:
    """Thread-safe state of the daemon. All methods take plain data."""

    def __init__(self, agent_id: str, version: str, department: str | None,
                 *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._agent = {"agent_id": agent_id, "version": version, "department": department,
                       "started_at": clock()}
        self._cards: dict[str, dict[str, Any]] = {}  # card_key -> card, insertion = arrival order
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_KEPT)
        self._counts = {"detected": 0, "archived": 0, "refused": 0, "deferred": 0, "interrupted": 0,
                        "failed": 0}
        self._archive: dict[str, Any] = {"reachable": None, "error": None, "checked_at": None}
        self._last_error: dict[str, Any] | None = None
        self._phase = "running"
        self._seq = 0
        self._event: dict[str, Any] | None = None
        self._subscribers: list[queue.Queue[dict]] = []

    # -- what the daemon reports -------------------------------------------------------

    def card_detected(self, card_key: str, reader: str, source: str) -> None:
        now = self._clock()
        with self._lock:
            self._cards[card_key] = {
                "card": card_key, "reader": reader, "source": source, "state": "queued",
                "stage": None, "progress": {}, "reason": None, "message": None, "retry_at": None,
                "info": {}, "since": now, "updated": now,
            }
            self._counts["detected"] += 1
            self._changed({"kind": "detected", "card": card_key, "reader": reader})

    def card_state(self, card_key: str, state: str, **info: Any) -> None:
        now = self._clock()
        with self._lock:
            card = self._card(card_key, now)
            if card["state"] == state and not info:
                return
            card["state"] = state
            card["updated"] = now
            card["info"] = _masked_info(info)
            reason = info.get("reason")
            if reason:
                card["reason"] = str(getattr(reason, "value", reason))
                card["message"] = info.get("message")
            elif state in ACTIVE_STATES:
                card["reason"] = card["message"] = card["retry_at"] = None
            if state == "interrupted":
                self._counts["interrupted"] += 1
            self._changed({"kind": "state", "card": card_key, "reader": card["reader"], "state": state,
                           "reason": card["reason"]})

    def progress(self, card_key: str, stage: str, info: dict) -> None:
        now = self._clock()
        with self._lock:
            card = self._card(card_key, now)
            if card["state"] == "queued":  # progress means a worker has it
                card["state"] = "detected"
            card["stage"] = stage
            card["updated"] = now
            progress = card["progress"]
            # The pipeline announces a stage with its totals ("files", "bytes")
            # before it reports per-file progress.
            if _count(info.get("files")) is not None and "files_done" not in info:
                progress.update(files_total=_count(info["files"]), files_done=0)
            if _count(info.get("bytes")) is not None and "bytes_done" not in info:
                progress.update(bytes_total=_count(info["bytes"]), bytes_done=0)
            for key in _PROGRESS_KEYS:
                if _count(info.get(key)) is not None:
                    progress[key] = _count(info[key])
            self._changed({"kind": "progress", "card": card_key, "reader": card["reader"], "stage": stage})

    def card_finished(self, card_key: str, outcome: dict) -> None:
        """``outcome`` is ``IngestOutcome.to_json()``; the card leaves the active list."""
        now = self._clock()
        with self._lock:
            card = self._cards.pop(card_key, None) or {"card": card_key, "reader": "", "source": "",
                                                       "since": now}
            media = [f for f in outcome.get("files", []) if f.get("status") != "ignored"]
            entry = {
                "card": card_key, "reader": card["reader"], "source": card.get("source", ""),
                "outcome": outcome.get("outcome", "failed"), "reason": outcome.get("reason"),
                "message": outcome.get("message"), "patient": mask_patient(outcome.get("patient")),
                "case_id": outcome.get("case_id"), "wiped": bool(outcome.get("wiped")),
                "files": len(media), "started": card.get("since"), "finished": now,
                "patients_shown": _patients_shown(outcome.get("patients_shown")),
            }
            self._recent.appendleft(entry)
            counted = _OUTCOME_COUNTS.get(entry["outcome"])
            if counted:
                self._counts[counted] += 1
            if entry["outcome"] in ("refused", "failed", "deferred") or (
                    entry["outcome"] == "archived" and not entry["wiped"]):
                self._last_error = {"at": now, "code": entry["reason"] or entry["outcome"].upper(),
                                    "message": entry["message"], "card": card_key}
            self._changed({"kind": "finished", "card": card_key, "reader": entry["reader"],
                           "outcome": entry["outcome"], "reason": entry["reason"],
                           "message": entry["message"], "wiped": entry["wiped"], "files": entry["files"],
                           "patient": entry["patient"]})

    def card_deferred(self, card_key: str, reason: str, message: str, retry_at: float) -> None:
        now = self._clock()
        reason = str(getattr(reason, "value", reason))
        with self._lock:
            card = self._card(card_key, now)
            first = card["state"] != "deferred"
            card.update(state="deferred", reason=reason, message=message, retry_at=retry_at, updated=now)
            if first:
                self._counts["deferred"] += 1
            self._last_error = {"at": now, "code": reason, "message": message, "card": card_key}
            self._changed({"kind": "deferred", "card": card_key, "reader": card["reader"], "reason": reason,
                           "message": message, "retry_at": retry_at, "first": first})

    def archive_reachable(self, ok: bool, error: str | None = None) -> None:
        now = self._clock()
        with self._lock:
            before = self._archive["reachable"]
            self._archive = {"reachable": bool(ok), "error": error, "checked_at": now}
            if not ok:
                self._last_error = {"at": now, "code": "ARCHIVE_UNAVAILABLE", "message": error, "card": None}
            if before is not bool(ok):
                log.info("archive reachability changed", extra={"reachable": ok, "error": error})
                self._changed({"kind": "archive", "reachable": bool(ok), "error": error})

    def set_phase(self, phase: str) -> None:
        """``starting`` | ``running`` | ``stopping``: the daemon's own lifecycle."""
        with self._lock:
            self._phase = phase
            self._changed({"kind": "phase", "phase": phase})

    # -- what the readers see --------------------------------------------------------

    def snapshot(self) -> dict:
        with self._lock:
            return self._snapshot()

    def subscribe(self) -> "queue.Queue[dict]":
        q: queue.Queue[dict] = queue.Queue(maxsize=SUBSCRIBER_BACKLOG)
        with self._lock:
            self._subscribers.append(q)
            _offer(q, self._snapshot())
        return q

    def unsubscribe(self, q: "queue.Queue[dict]") -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    # -- inside ------------------------------------------------------------------------

    def _card(self, card_key: str, now: float) -> dict[str, Any]:
        card = self._cards.get(card_key)
        if card is None:  # e.g. a card resumed from the journal after a restart
            card = {"card": card_key, "reader": "", "source": "", "state": "queued", "stage": None,
                    "progress": {}, "reason": None, "message": None, "retry_at": None, "info": {},
                    "since": now, "updated": now}
            self._cards[card_key] = card
        return card

    def _changed(self, event: dict[str, Any]) -> None:
        self._seq += 1
        self._event = {**event, "seq": self._seq, "at": self._clock()}
        if self._subscribers:
            snap = self._snapshot()
            for q in self._subscribers:
                _offer(q, snap)

    def _state(self) -> str:
        if self._phase != "running":
            return self._phase
        states = {c["state"] for c in self._cards.values()}
        if states & set(ACTIVE_STATES):
            return "busy"
        if "deferred" in states:
            return "deferred"
        if states:
            return "busy"  # queued or interrupted cards are still cards in readers
        return "idle"

    def _snapshot(self) -> dict:
        cards = [copy.deepcopy(c) for c in self._cards.values()]
        queued = [c for c in cards if c["state"] == "queued"]
        working = [c for c in cards if c["state"] != "queued"]
        readers: dict[str, dict[str, Any]] = {}
        for c in cards:
            r = readers.setdefault(c["reader"], {"reader": c["reader"], "card": None, "queued": 0})
            if c["state"] == "queued":
                r["queued"] += 1
            elif r["card"] is None:
                r["card"] = c["card"]
        for entry in self._recent:  # readers that were used, now empty
            readers.setdefault(entry["reader"], {"reader": entry["reader"], "card": None, "queued": 0})
        return {
            **self._agent,
            "at": self._clock(),
            "seq": self._seq,
            "state": self._state(),
            "archive": dict(self._archive),
            "readers": sorted(readers.values(), key=lambda r: r["reader"]),
            "cards": working,
            "queue": [{"card": c["card"], "reader": c["reader"], "since": c["since"]} for c in queued],
            "recent": [dict(e) for e in self._recent],
            "counts": dict(self._counts),
            "last_error": dict(self._last_error) if self._last_error else None,
            "event": dict(self._event) if self._event else None,
        }


# How many files per patient a refused mixed card lists on the board.
SHOWN_FILES_KEPT = 12


def _patients_shown(shown: Any) -> list[dict[str, Any]]:
    """A refused mixed card's "which files show which number", masked again (the
    outcome masks them already; nothing unmasked reaches the board) and bounded."""
    out: list[dict[str, Any]] = []
    for item in shown if isinstance(shown, list) else []:
        if not isinstance(item, dict) or not item.get("patient"):
            continue
        files = [str(f) for f in item.get("files") or []]
        number = str(item["patient"])
        masked = mask_patient(number) if number.isdigit() else mask_numbers_in_text(number, keep_date=True)
        out.append({"patient": masked,
                    "files": files[:SHOWN_FILES_KEPT], "more": max(0, len(files) - SHOWN_FILES_KEPT)})
    return out


def shown_text(shown: list[dict[str, Any]]) -> str:
    """"19121212-**** på IMG_0001.JPG, IMG_0003.JPG; 19820415-**** på IMG_0002.JPG"."""
    parts = []
    for item in shown:
        files = ", ".join(item["files"]) + (f" och {item['more']} till" if item.get("more") else "")
        parts.append(f"{item['patient']} på {files}")
    return "; ".join(parts)


def _count(value: Any) -> int | None:
    """A progress number, or None: a malformed report must not fail the card."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _offer(q: "queue.Queue[dict]", item: dict) -> None:
    """Put without ever blocking the daemon: a full queue drops its oldest item."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass


# -- the words staff read ------------------------------------------------------------
#
# One view of a snapshot for the person at the capture PC, shared by the status
# page and ``bildsluss-agent status``: per reader a tone, a headline in big plain
# Swedish words, and a sentence. Plain data in, plain data out.

STAGES_SV = {
    "scan": "läser kortet", "identify": "läser personnumret", "decide": "kontrollerar patienten",
    "strip": "tar bort dold information", "upload": "skickar till arkivet", "commit": "sparar i arkivet",
    "verify": "kontrollerar kvittot", "wipe": "tömmer kortet",
}
STATES_SV = {
    "detected": "kortet hittat", "scanned": "kortet läst", "identified": "personnumret läst",
    "decided": "patienten kontrollerad", "stripped": "dold information borttagen",
    "uploading": "skickar till arkivet", "confirmed": "arkivet har bekräftat", "wiped": "kortet tömt",
}
MODES_SV = {"photo": "foto", "assault": "misshandel", "ultrasound": "ultraljud", "video": "video",
            "audio": "ljud"}


def _reason(code: str | None) -> Reason | None:
    try:
        return Reason(code) if code else None
    except ValueError:
        return None


def _title(code: str | None) -> str:
    reason = _reason(code)
    return title_sv(reason) if reason else (code or "okänt fel")


def _sentence(code: str | None, fallback: str | None) -> str:
    reason = _reason(code)
    return staff_message_sv(reason) if reason else (fallback or "")


def _clock_time(ts: float | None) -> str:
    return time.strftime("%H:%M", time.localtime(ts)) if ts else ""


def progress_text(progress: dict[str, Any]) -> str:
    parts = []
    if progress.get("files_total"):
        parts.append(f"{progress.get('files_done', 0)} av {progress['files_total']} filer")
    if progress.get("bytes_total"):
        parts.append(f"{progress.get('bytes_done', 0) / 1e6:.1f} av {progress['bytes_total'] / 1e6:.1f} MB")
    return " · ".join(parts)


def held_headline(code: str | None) -> str:
    if code == "SPOOL_FULL":
        return "Datorn har inte plats – använd inte kortet"
    return "Arkivet nås inte – använd inte kortet"


def _card_panel(card: dict[str, Any]) -> dict[str, Any]:
    state = card["state"]
    if state == "deferred":
        retry = f" Nytt försök kl {_clock_time(card.get('retry_at'))}." if card.get("retry_at") else ""
        return {"tone": "warn", "headline": held_headline(card.get("reason")),
                "text": _sentence(card.get("reason") or "ARCHIVE_UNAVAILABLE", card.get("message")) + retry,
                "progress": ""}
    if state == "interrupted":
        return {"tone": "warn", "headline": "Kortet togs ur – sätt i det igen",
                "text": _sentence(card.get("reason") or "CARD_REMOVED", card.get("message")), "progress": ""}
    doing = STAGES_SV.get(card.get("stage") or "", STATES_SV.get(state, "arbetar"))
    return {"tone": "busy", "headline": "Arbetar – ta inte ur kortet", "text": doing.capitalize() + ".",
            "progress": progress_text(card.get("progress") or {})}


def outcome_panel(entry: dict[str, Any]) -> dict[str, Any]:
    outcome, code = entry.get("outcome"), entry.get("reason")
    who = f" för {entry['patient']}" if entry.get("patient") else ""
    files = entry.get("files") or 0
    if outcome == "archived" and entry.get("wiped"):
        return {"tone": "ok", "headline": "Klart – kortet är tomt",
                "text": f"{files} fil{'er' if files != 1 else ''} sparade i arkivet{who}. "
                        "Kortet kan användas för nästa patient.", "progress": ""}
    if outcome == "archived":
        return {"tone": "warn", "headline": "Sparat, men kortet är inte tömt – använd inte kortet",
                "text": _sentence(code or "WIPE_FAILED", entry.get("message")), "progress": ""}
    if outcome == "refused":
        panel = {"tone": "refused", "headline": f"Nekat: {_title(code)}",
                 "text": _sentence(code, entry.get("message")), "progress": ""}
        if entry.get("patients_shown"):  # so that staff can sort the card
            panel["shown"] = "Bilder per patient: " + shown_text(entry["patients_shown"]) + "."
        return panel
    if outcome == "deferred":
        return {"tone": "warn", "headline": held_headline(code),
                "text": _sentence(code or "ARCHIVE_UNAVAILABLE", entry.get("message")), "progress": ""}
    return {"tone": "refused", "headline": f"Fel: {_title(code or 'INTERNAL_ERROR')}",
            "text": _sentence(code or "INTERNAL_ERROR", entry.get("message")), "progress": ""}


def staff_view(snapshot: dict[str, Any], context: dict[str, Any] | None = None) -> dict[str, Any]:
    """What to show staff: an archive line, the EHR context, one panel per reader
    (newest news first: the card in it, else its last outcome, else "waiting"),
    and the recent outcomes. ``context`` is a masked ``ExpectedContext.to_json()``."""
    cards = {c["card"]: c for c in snapshot.get("cards", [])}
    recent = snapshot.get("recent", [])
    panels = []
    for reader in snapshot.get("readers", []):
        name = reader["reader"] or "kortläsare"
        if reader.get("card") in cards:
            panel = _card_panel(cards[reader["card"]])
        else:
            last = next((e for e in recent if e.get("reader") == reader["reader"]), None)
            panel = outcome_panel(last) if last else {
                "tone": "idle", "headline": "Sätt i ett kort", "text": "", "progress": ""}
            if last:
                panel["text"] = f"{panel['text']} ({_clock_time(last.get('finished'))})".strip()
        queued = reader.get("queued", 0)
        panels.append({**panel, "reader": name,
                       "queued": f"{queued} kort väntar på tur" if queued else ""})
    if not panels:
        panels.append({"tone": "idle", "reader": "", "headline": "Sätt i ett kort", "text": "",
                       "progress": "", "queued": ""})
    archive = snapshot.get("archive") or {}
    if archive.get("reachable") is False:
        archive_line = {"tone": "warn", "text": "Arkivet nås inte just nu. Kort som sätts i sparas inte "
                        "förrän arkivet svarar – använd dem inte igen."}
    elif archive.get("reachable") is None:
        archive_line = {"tone": "idle", "text": "Kontrollerar kontakten med arkivet …"}
    else:
        archive_line = {"tone": "ok", "text": "Arkivet nås."}
    context_line = None
    if context:
        mode = MODES_SV.get(context.get("mode") or "", "")
        what = f" ({mode})" if mode else ""
        if context.get("expired"):
            context_line = {"tone": "warn", "text": f"Patientvalet från journalen för {context['patient']} "
                            "har gått ut. Starta igen från journalen."}
        else:
            context_line = {"tone": "busy", "text": f"Nästa kort ska vara patient {context['patient']}{what}, "
                            f"valt i journalen (giltigt till kl {_clock_time(context.get('expires_at'))})."}
    history = [{**outcome_panel(e), "at": _clock_time(e.get("finished")), "reader": e.get("reader", ""),
                "reason": e.get("reason")} for e in recent]
    return {"archive": archive_line, "context": context_line, "panels": panels, "recent": history}
