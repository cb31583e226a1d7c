"""Verify stage: every file sent has an explicit, matching confirmation (R10).

Success is never inferred from a duplicate or from silence: each stripped file
must have exactly one receipt naming its path, with the same SHA-256 and size,
and a blob id and media item id from the archive. Any gap refuses the wipe.
"""
from __future__ import annotations

from collections.abc import Sequence

from agent.card.model import Receipt, StageError
from agent.card.progress import SentFile
from agent.card.reasons import Reason


def verify_receipts(sent: Sequence[SentFile], receipts: Sequence[Receipt]) -> None:
    """Raise StageError(ARCHIVE_REJECTED) unless every file is confirmed as sent."""
    problems: list[str] = []
    by_path: dict[str, Receipt] = {}
    for r in receipts:
        if r.relative_path in by_path:
            problems.append(f"two receipts for {r.relative_path}")
        by_path[r.relative_path] = r
    expected = {f.relative_path for f in sent}
    for extra in sorted(set(by_path) - expected):
        problems.append(f"receipt for a file that was not sent: {extra}")
    for f in sent:
        found = by_path.get(f.relative_path)
        if found is None:
            problems.append(f"no receipt for {f.relative_path}")
            continue
        r = found
        if r.sha256 != f.sha256:
            problems.append(f"{f.relative_path}: archive holds sha256 {r.sha256}, sent {f.sha256}")
        if r.size != f.size:
            problems.append(f"{f.relative_path}: archive holds {r.size} bytes, sent {f.size}")
        if not r.blob_id or not r.media_item_id:
            problems.append(f"{f.relative_path}: receipt lacks a blob or media item id")
    if problems:
        raise StageError(Reason.ARCHIVE_REJECTED, "; ".join(problems))
