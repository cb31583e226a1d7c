"""The daemon's card journal: each card a small state machine in local SQLite.

A card's row is written *before* the next step starts (write-ahead), with
``synchronous=FULL``, so after a kill -9 or a power loss the daemon knows the
last step that finished and what it established (the scan's manifest, the
decision, the session id, the stripped manifest). That is the single source of
truth for resuming (ARCHITECTURE, "The agent's spool").

States, in order::

    detected -> scanned -> identified -> decided -> stripped -> uploading
             -> confirmed -> wiped -> done
    or: refused (terminal), deferred (archive unreachable, retried with
    backoff), interrupted (card pulled or changed; resumed when it comes back)

The safety rule follows from the order: ``confirmed`` is written only after
every receipt was verified, so a card found half wiped after a crash (fewer
files than the journal's manifest, every one of them unchanged) is known to be
archived and may be finished; any other card state resumes from the start of
the pipeline, where the archive's content-derived session id makes the upload
idempotent (``pipeline.session_id_for``).

What it keeps of a patient (issue 13): a card's number (the EHR context it
started with, the decision and its evidence) only while the card is open;
when the card is finished (done or refused) they are cleared, and a detail
(which may name the numbers a refusal found) is stored masked. Finished rows
are deleted after ``[daemon] journal_keep_days``. ``secure_delete`` zeroes
what is cleared, and the write-ahead log is truncated after a card finishes,
so the old values do not linger in free pages or the WAL. The folder is 0700
and the database files 0600.

The journal owns its format: :func:`fields_of` turns the pipeline's typed
checkpoints (:mod:`agent.card.progress`) into a row's fields and
:func:`resume_of` turns a row back into the pipeline's :class:`Resume`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from agent.card.model import Decision, Evidence, MediaKind, Method
from agent.card.progress import Checkpoint, Confirmed, Decided, Resume, Scanned, SentFile, Stripped, Uploading
from bildsluss_common.identity.masking import mask_numbers_in_text

STATES = (
    "detected", "scanned", "identified", "decided", "stripped", "uploading",
    "confirmed", "wiped", "done", "refused", "deferred", "interrupted",
)
TERMINAL = frozenset({"done", "refused"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
    id INTEGER PRIMARY KEY,
    card_key TEXT NOT NULL,
    reader TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    mode TEXT,
    expect TEXT,
    manifest TEXT,
    decision TEXT,
    session_id TEXT,
    stripped TEXT,
    case_id TEXT,
    reason TEXT,
    message TEXT,
    detail TEXT,
    confirmed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cards_by_key ON cards (card_key, state);
CREATE TABLE IF NOT EXISTS transitions (
    card_id INTEGER NOT NULL REFERENCES cards (id),
    state TEXT NOT NULL,
    at REAL NOT NULL,
    info TEXT
);
"""


class JournalError(Exception):
    """A transition the state machine does not allow (a bug, never a card's fault)."""


@dataclasses.dataclass(frozen=True)
class CardRecord:
    id: int
    card_key: str
    reader: str
    source: str
    state: str
    mode: str | None
    expect: str | None
    manifest: dict[str, str] | None  # relative path -> sha256 of the original, at the first scan
    decision: dict | None
    session_id: str | None
    stripped: list[dict] | None  # [{"path", "sha256", "size"}] as sent
    case_id: str | None
    reason: str | None
    message: str | None
    detail: str | None
    # Set when the archive confirmed every file; it survives interruptions (a
    # resumed run may find the card half wiped and finish it) and is cleared
    # only when the card's content is scanned anew.
    confirmed: bool
    attempts: int
    retry_at: float | None
    created_at: float
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL



_JSON_FIELDS = ("manifest", "decision", "stripped")
_UPDATABLE = {"mode", "expect", "manifest", "decision", "session_id", "stripped", "case_id",
              "reason", "message", "detail", "attempts", "retry_at", "reader", "source"}


def allowed(old: str, new: str) -> bool:
    # A finished card stays finished (the same card inserted again is a new
    # row). Otherwise a resumed card runs the pipeline again from its start, so
    # its state may go back; what an earlier run established is kept in the
    # row's fields ("confirmed" is cleared only by a new scan of other content).
    return old not in TERMINAL


# What a finished card keeps of its patient: nothing (the module docstring).
_CLEARED_WHEN_FINISHED = {"expect": None, "decision": None}


def _masked(text: str | None) -> str | None:
    return mask_numbers_in_text(text, keep_date=True) if text else text


class Journal:
    def __init__(self, path: pathlib.Path) -> None:
        # 0711, an existing folder too: the parser user passes through it to the spool
        # below; nobody but the agent lists it, and the journal's files are 0600.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(path.parent, 0o711)
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            # SQLite gives them the database's mode; an old journal's may have been wider.
            try:
                os.chmod(f"{path}{suffix}", 0o600, follow_symlinks=False)
            except FileNotFoundError:
                pass
        self._clear_finished()

    def _clear_finished(self) -> None:
        """Clear what finished cards keep of their patient (rows an older version wrote)."""
        with self._lock, self._db:
            rows = self._db.execute(
                "SELECT id, detail FROM cards WHERE state IN ('done', 'refused')"
                " AND (expect IS NOT NULL OR decision IS NOT NULL OR detail IS NOT NULL)").fetchall()
            for row in rows:
                self._db.execute("UPDATE cards SET expect = NULL, decision = NULL, detail = ? WHERE id = ?",
                                 (_masked(row["detail"]), row["id"]))
        if rows:
            self._truncate_wal()

    def _truncate_wal(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def prune(self, keep_s: float, *, now: float | None = None) -> int:
        """Delete finished cards (done, refused) last changed more than ``keep_s`` ago;
        returns how many. Open cards stay whatever their age."""
        cutoff = (time.time() if now is None else now) - keep_s
        with self._lock, self._db:
            ids = [r["id"] for r in self._db.execute(
                "SELECT id FROM cards WHERE state IN ('done', 'refused') AND updated_at < ?", (cutoff,))]
            self._db.executemany("DELETE FROM transitions WHERE card_id = ?", [(i,) for i in ids])
            self._db.executemany("DELETE FROM cards WHERE id = ?", [(i,) for i in ids])
        if ids:
            self._truncate_wal()
        return len(ids)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ------------------------------------------------------------------

    def open_card(self, card_key: str, reader: str, source: str, *, mode: str | None,
                  expect: str | None) -> CardRecord:
        now = time.time()
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO cards (card_key, reader, source, state, mode, expect, created_at,"
                " updated_at) VALUES (?, ?, ?, 'detected', ?, ?, ?, ?)",
                (card_key, reader, source, mode, expect, now, now),
            )
            assert cur.lastrowid is not None  # an INSERT on a rowid table
            card_id = cur.lastrowid
            self._db.execute("INSERT INTO transitions VALUES (?, 'detected', ?, NULL)", (card_id, now))
        return self.get(card_id)

    def advance(self, card_id: int, state: str, **fields: Any) -> CardRecord:
        """Move a card to ``state`` and store what the finished step established."""
        if state not in STATES:
            raise JournalError(f"unknown state {state!r}")
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise JournalError(f"unknown journal field(s): {', '.join(sorted(unknown))}")
        now = time.time()
        with self._lock, self._db:
            row = self._db.execute("SELECT state FROM cards WHERE id = ?", (card_id,)).fetchone()
            if row is None:
                raise JournalError(f"no card {card_id} in the journal")
            if not allowed(row["state"], state):
                raise JournalError(f"card {card_id}: {row['state']} -> {state} is not a transition")
            if state in TERMINAL:
                fields = {**fields, **_CLEARED_WHEN_FINISHED}
            if fields.get("detail"):
                fields["detail"] = _masked(fields["detail"])
            values = {k: (json.dumps(v) if k in _JSON_FIELDS and v is not None else v)
                      for k, v in fields.items()}
            if state == "confirmed":
                values["confirmed"] = 1
            elif state == "scanned":
                # The card's content is read anew (a resumed card that is not a
                # part of what was confirmed): a new confirmation is needed.
                values["confirmed"] = 0
            sets = ", ".join(f"{k} = ?" for k in values)
            self._db.execute(
                f"UPDATE cards SET state = ?, updated_at = ?{', ' + sets if sets else ''} WHERE id = ?",
                (state, now, *values.values(), card_id),
            )
            info = {k: v for k, v in fields.items() if k in ("reason", "case_id", "attempts")}
            self._db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)",
                             (card_id, state, now, json.dumps(info) if info else None))
        if state in TERMINAL:
            self._truncate_wal()  # the cleared values' old pages leave the WAL too
        return self.get(card_id)

    # -- reading ------------------------------------------------------------------

    def get(self, card_id: int) -> CardRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM cards WHERE id = ?", (card_id,)).fetchone()
        if row is None:
            raise JournalError(f"no card {card_id} in the journal")
        return _record(row)

    def unfinished(self, card_key: str | None = None) -> list[CardRecord]:
        """Cards not done or refused (newest first), optionally of one card identity."""
        query = "SELECT * FROM cards WHERE state NOT IN ('done', 'refused')"
        args: tuple = ()
        if card_key is not None:
            query += " AND card_key = ?"
            args = (card_key,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC", args).fetchall()
        return [_record(r) for r in rows]

    def history(self, card_id: int) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state FROM transitions WHERE card_id = ? ORDER BY rowid", (card_id,)
            ).fetchall()
        return [r["state"] for r in rows]

    def all(self) -> list[CardRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM cards ORDER BY id").fetchall()
        return [_record(r) for r in rows]


def _record(row: sqlite3.Row) -> CardRecord:
    values = dict(row)
    for key in _JSON_FIELDS:
        if values[key] is not None:
            values[key] = json.loads(values[key])
    values["confirmed"] = bool(values["confirmed"])
    return CardRecord(**values)


# -- the pipeline's checkpoints in and out of a row ------------------------------------


def fields_of(checkpoint: Checkpoint) -> dict[str, Any]:
    """The row fields a checkpoint sets (JSON-able values)."""
    if isinstance(checkpoint, Scanned):
        return {"manifest": dict(checkpoint.manifest)}
    if isinstance(checkpoint, Decided):
        return {"decision": decision_to_json(checkpoint.decision)}
    if isinstance(checkpoint, Stripped):
        return {"session_id": checkpoint.session_id, "stripped": sent_to_json(checkpoint.sent)}
    if isinstance(checkpoint, Uploading):
        return {"session_id": checkpoint.session_id}
    if isinstance(checkpoint, Confirmed):
        return {"case_id": checkpoint.case_id}
    return {}


def resume_of(record: CardRecord) -> Resume | None:
    """What an unfinished card's row lets the pipeline skip or finish (None: nothing)."""
    if record.manifest is None:
        return None
    return Resume(
        originals=record.manifest,
        decision=decision_from_json(record.decision) if record.decision else None,
        confirmed=record.confirmed,
        session_id=record.session_id,
        sent=tuple(sent_from_json(record.stripped or ())),
    )


def decision_to_json(decision: Decision) -> dict[str, Any]:
    return {
        "patient": decision.patient_id,
        "ehr_context": decision.ehr_context,
        "evidence": [dict(e.to_json(), invalid=e.invalid) for e in decision.evidence],
    }


def decision_from_json(data: dict[str, Any]) -> Decision:
    evidence = tuple(
        Evidence(
            relative_path=e["file"], frame=int(e["frame"]), method=Method(e["method"]),
            text=e["text"], patient_id=e["patient"], symbology=e["symbology"] or "",
            position=tuple(e["position"]), invalid=bool(e.get("invalid", False)),
        )
        for e in data["evidence"]
    )
    return Decision(data["patient"], None, evidence=evidence, ehr_context=bool(data["ehr_context"]))


def sent_to_json(sent: Sequence[SentFile]) -> list[dict[str, Any]]:
    return [
        {"path": f.relative_path, "sha256": f.sha256, "size": f.size, "kind": f.kind.value,
         "media_type": f.media_type, "original_sha256": f.original_sha256, "original_size": f.original_size}
        for f in sent
    ]


def sent_from_json(entries: Sequence[dict[str, Any]]) -> list[SentFile]:
    return [
        SentFile(relative_path=e["path"], sha256=e["sha256"], size=e["size"], kind=MediaKind(e["kind"]),
                 media_type=e["media_type"], original_sha256=e["original_sha256"],
                 original_size=e["original_size"])
        for e in entries
    ]

