"""Fault points: named places in CommitSession, Write and purge where a test can
kill the archive process or hold it (issue 13's fault suite, ``tests/faults/``).

Inert unless the environment variable ``BILDSLUSS_FAULT_POINTS`` is set, which
no packaged unit, example or documented command sets: ``reach()`` then returns
after one dictionary lookup. The variable holds comma-separated ``NAME=ACTION``
pairs:

* ``kill`` — SIGKILL this process at the point (as a power cut or the OOM killer
  would), ``kill@N`` at the N-th time the point is reached in this process;
* ``wait:PATH`` — create ``PATH.reached``, then wait until ``PATH`` exists
  (up to 120 s) and go on: a test holds a transaction open at the point to
  interleave another one with it.

Every point is listed in ``POINTS`` (a test checks that each is reached by the
code paths it names), so the suite can walk them all.
"""
from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

ENV = "BILDSLUSS_FAULT_POINTS"

#: Every fault point, in the order a CommitSession, a Write and a purge pass them.
POINTS: tuple[str, ...] = (
    # CommitSession (archive_server/ingest.py)
    "commit.begin",                   # before the transaction
    "commit.session_locked",          # session row locked, nothing read yet
    "commit.blobs_locked",            # the blob rows share-locked
    "commit.blobs_confirmed",         # every blob stat'ed in the store
    "commit.patient_locked",          # the patient's lock taken, confidential mark read
    "commit.case_added",              # case + version added, not flushed
    "commit.media_flushed",           # media rows flushed
    "commit.session_marked",          # session marked committed
    "commit.audited",                 # audit event appended, not committed
    "commit.committed",               # transaction committed, receipts not sent
    "commit.partials_discarded",      # leftovers of the session removed
    # Write (archive_server/ingest.py)
    "write.chunk_written",            # one chunk appended to the partial file
    "write.blob_committed",           # partial verified and moved into the store
    "write.blob_recorded",            # the blob's row and its session's mark committed
    # purge (archive_server/admin.py, archive_server/blobs.py)
    "purge.begin",                    # before the transaction
    "purge.blobs_locked",             # the purged case's blob rows locked
    "purge.rows_deleted",             # case rows deleted, blobs tombstoned, not committed
    "purge.committed",                # database committed, no blob deleted yet
    "purge.blob_locked",              # one tombstoned blob's row locked for its delete
    "purge.blob_deleted",             # its bytes deleted, the tombstone not yet removed
    "purge.blob_forgotten",           # its tombstone removed (committed)
    # marking a patient confidential (archive_server/admin.py)
    "confidential.cases_marked",      # mark written, the patient's cases updated, not committed
)

_counts: dict[str, int] = {}
_lock = threading.Lock()


def reach(name: str) -> None:
    """The code passes the fault point ``name``; see the module docstring."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action = _actions(spec).get(name)
    if action is None:
        return
    with _lock:
        _counts[name] = count = _counts.get(name, 0) + 1
    if action == "kill" or (action.startswith("kill@") and count == int(action[5:])):
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("wait:"):
        path = pathlib.Path(action[5:])
        pathlib.Path(f"{path}.reached").touch()
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def _actions(spec: str) -> dict[str, str]:
    out = {}
    for pair in spec.split(","):
        name, _, action = pair.strip().partition("=")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown fault point {name!r}")
        out[name] = action
    return out
