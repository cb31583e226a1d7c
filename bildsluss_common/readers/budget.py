"""Reading budgets in CPU time, so that a busy machine does not turn into refusals.

A frame's reading budget (``identify_budget_s``, default 2 s) is what the readers
may *compute* on it, not how long the wall clock runs: the capture PC may be busy
(an upload, an antivirus scan; on the development machine, other test runs), and
with a wall-clock deadline every second of someone else's work became a missed
label and a needless re-shoot.

CPU time here is this thread's (:func:`time.thread_time`; zxing-cpp, numpy,
Pillow and tesseract, :mod:`bildsluss_common.readers.tesseract`, run in the
calling thread) plus the finished child processes' (:func:`resource.getrusage`
``RUSAGE_CHILDREN`` counts a child once it has been waited for: no reader runs a
program since tesseract runs in the process, and one that did would be counted).
A wall-clock backstop (``WALL_FACTOR`` times the budget, plus ``WALL_SLACK_S``)
still bounds a frame on a machine so loaded that nothing would finish; it is
tesseract's own timeout.

Reads are not interruptible: a zxing-cpp call that has started finishes, and a
tesseract call finishes its layout analysis before it sees its timeout. Callers check :meth:`Budget.left` before each step and size the steps
(cheap first), so a frame overruns its budget by at most one step.
"""
from __future__ import annotations

import resource
import time

# A frame may take this many times its CPU budget on the wall clock before it is cut off.
# Generous: a capture PC at load 8 on 2 cores gives a reader a quarter of a core, and a
# frame cut short by the clock is read differently from the same frame on an idle PC
# (4 here once made an assault clip's outcome depend on the machine's load).
WALL_FACTOR = 10.0
WALL_SLACK_S = 1.0


def cpu_now() -> float:
    """CPU seconds of this thread plus those of the child processes waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


class Budget:
    """``cpu_s`` seconds of CPU from now, and a wall-clock backstop."""

    def __init__(self, cpu_s: float, *, wall_s: float | None = None) -> None:
        self.cpu_s = max(0.0, cpu_s)
        self._cpu_end = cpu_now() + self.cpu_s
        wall = self.cpu_s * WALL_FACTOR + WALL_SLACK_S if wall_s is None else wall_s
        self._wall_end = time.monotonic() + wall

    def left(self) -> float:
        """Seconds left: CPU seconds, or fewer when the wall-clock backstop is nearer."""
        return min(self._cpu_end - cpu_now(), self._wall_end - time.monotonic())

    def wall_left(self) -> float:
        """Wall-clock seconds to the backstop (a subprocess' timeout)."""
        return self._wall_end - time.monotonic()

    def spent(self) -> bool:
        return self.left() <= 0
