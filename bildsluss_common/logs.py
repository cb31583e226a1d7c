"""Structured logging: one JSON object per line on stderr (journald-friendly).

Extra fields given with ``log.info("...", extra={...})`` become keys of the object.
Every line carries its syslog severity as ``priority`` (0-7, journald's PRIORITY).
When stderr is the journal (systemd sets ``$JOURNAL_STREAM`` to its device and inode)
each line also starts with ``<N>``, the sd-daemon prefix journald takes as the entry's
PRIORITY and strips, so that ``journalctl -p warning`` finds the warnings; anywhere
else a line is plain JSON.

Every text of a line (the message, string fields, a traceback) passes through
:func:`~bildsluss_common.identity.masking.mask_numbers_in_text` on its way out:
call sites mask what they know is a patient's number (``mask_patient``), and
this catches what they cannot know, such as a database error quoting the row
it failed on. Numbers (byte counts, durations) are left alone.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

from bildsluss_common.identity.masking import mask_numbers_in_text

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}



def priority(levelno: int) -> int:
    """The syslog severity of a logging level: 3 error, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class JsonFormatter(logging.Formatter):
    def __init__(self, journal_prefix: bool = False) -> None:
        super().__init__()
        self.journal_prefix = journal_prefix

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "priority": priority(record.levelno),
            "logger": record.name,
            "msg": mask_numbers_in_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                if isinstance(value, str):
                    entry[key] = mask_numbers_in_text(value)
                elif isinstance(value, (int, float, bool, type(None))):
                    entry[key] = value
                else:
                    entry[key] = mask_numbers_in_text(str(value))
        if record.exc_info:
            entry["exc"] = mask_numbers_in_text(self.formatException(record.exc_info))
        line = json.dumps(entry, ensure_ascii=False)
        return f"<{entry['priority']}>{line}" if self.journal_prefix else line


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(journal_prefix=stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
