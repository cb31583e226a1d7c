"""The progress bar of ``bildsluss-agent ingest`` on a terminal (issue 12).

A :class:`~agent.card.progress.CardProgress` that draws one row per stage on
standard error with ``rich``: files done of the stage's files, and bytes where
the stage reports them (strip, upload). Standard output is left alone, so that
``--json`` stays one machine-readable object. Used only when standard error is
a terminal; the daemon's people see the same progress on the status page.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from agent.card.progress import Checkpoint, NoProgress, Wiped

STAGES = ("scan", "identify", "strip", "upload", "commit", "verify", "wipe")
_SAY = {"scan": "reading", "identify": "identity", "strip": "stripping", "upload": "sending",
        "commit": "archiving", "verify": "checking", "wipe": "wiping"}


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _mib(done: int | None, total: int | None) -> str:
    if total is None:
        return ""
    return f"{(done or 0) / (1 << 20):.1f}/{total / (1 << 20):.1f} MiB"


class TerminalProgress(NoProgress):
    """One bar per stage on ``console`` (standard error by default); a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.bar = Progress(
            TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[size]}"), TimeElapsedColumn(),
            console=console or Console(stderr=True), transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.bytes_total: dict[str, int] = {}

    def __enter__(self) -> TerminalProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def stage(self, stage: str, info: Mapping[str, object]) -> None:
        total = _int(info.get("files_total", info.get("files")))
        done = _int(info.get("files_done"))
        size_total = _int(info.get("bytes_total", info.get("bytes")))
        if size_total is not None:
            self.bytes_total[stage] = size_total
        fields: dict[str, Any] = {}
        if stage in self.bytes_total:
            fields["size"] = _mib(_int(info.get("bytes_done")), self.bytes_total[stage])
        if stage not in self.tasks:
            self._finish_before(stage)
            self.tasks[stage] = self.bar.add_task(_SAY.get(stage, stage), total=total if total else 1,
                                                  completed=0, size=fields.get("size", ""))
        task = self.tasks[stage]
        update: dict[str, Any] = dict(fields)
        if total:
            update["total"] = total
        if done is not None:
            update["completed"] = done
        self.bar.update(task, **update)

    def _finish_before(self, stage: str) -> None:
        """A stage without per-file reports (commit, verify) is done when a later one starts."""
        order = STAGES.index(stage) if stage in STAGES else len(STAGES)
        for name, task in self.tasks.items():
            if name in STAGES and STAGES.index(name) < order and name != "identify":
                self._complete(task)

    def _complete(self, task: TaskID) -> None:
        total = next((t.total for t in self.bar.tasks if t.id == task), None)
        self.bar.update(task, completed=total or 1)

    def reached(self, checkpoint: Checkpoint) -> None:
        if isinstance(checkpoint, Wiped):  # the wipe reports no files: it is done
            for task in self.tasks.values():
                self._complete(task)
