"""The EHR context (R5): the patient the clinician has open in the record.

When capture is started from the patient's record, the EHR runs
``bildsluss-agent expect ID``; the control socket hands the number to
:meth:`ContextStore.put`. The next card the daemon starts takes it with
:meth:`ContextStore.take` (once: a context belongs to one card) and then every
number read from the card must equal it. A context expires: a card that starts
after ``expires_at`` is refused with ``EHR_CONTEXT_EXPIRED`` rather than filed
under a patient chosen long ago, so :meth:`take` hands an expired context out
once more, marked ``expired``, before forgetting it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from bildsluss_common.identity.numbers import validate
from bildsluss_common.identity.reserve import ReserveFormat
from agent.card.model import Mode
from bildsluss_common.identity.masking import mask_patient

log = logging.getLogger(__name__)

# Longer than a working day is a mistake, not a context.
MAX_TTL_S = 12 * 3600.0


@dataclasses.dataclass(frozen=True)
class ExpectedContext:
    patient: str  # canonical: 12 digits, or a reservnummer as its format writes it
    mode: Mode | None  # None: the daemon's configured mode
    set_at: float  # time.time()
    expires_at: float
    set_by: str  # the user name of the socket peer
    expired: bool = False  # True when take() found it past expires_at

    def to_json(self) -> dict:
        return {"patient": self.patient, "mode": self.mode.value if self.mode else None,
                "set_at": self.set_at, "expires_at": self.expires_at, "set_by": self.set_by,
                "expired": self.expired}


class ContextStore:
    """Holds at most one expected patient; thread-safe."""

    def __init__(self, reserve_formats: Sequence[ReserveFormat] = (), *,
                 clock: Callable[[], float] = time.time) -> None:
        self._reserve_formats = tuple(reserve_formats)
        self._clock = clock
        self._lock = threading.Lock()
        self._current: ExpectedContext | None = None

    def put(self, patient: str, mode: Mode | None, ttl_s: float, set_by: str) -> ExpectedContext:
        """Validate and store; replaces any earlier context. ValueError when the
        number is not a valid personnummer, samordningsnummer or enabled
        reservnummer, or the ttl is out of range."""
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not math.isfinite(ttl_s) \
                or not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"the context's lifetime must be between 0 and {MAX_TTL_S:g} seconds, got {ttl_s!r}")
        if mode is not None and not isinstance(mode, Mode):
            raise ValueError(f"unknown mode {mode!r}")
        checked = validate(patient, reserve_formats=self._reserve_formats)
        if checked.number is None:
            raise ValueError(f"{patient!r} is not a valid identity number: {checked.detail or checked.problem}")
        now = self._clock()
        ctx = ExpectedContext(patient=checked.number.canonical, mode=mode, set_at=now,
                              expires_at=now + float(ttl_s), set_by=set_by)
        with self._lock:
            replaced = self._current is not None
            self._current = ctx
        log.info("EHR context set", extra={
            "patient": mask_patient(ctx.patient), "mode": mode.value if mode else None, "ttl_s": ttl_s,
            "set_by": set_by, "replaced": replaced})
        return ctx

    def take(self) -> ExpectedContext | None:
        """The context for the card that starts now, consumed. An expired one is
        returned once with ``expired=True`` (the daemon refuses that card)."""
        with self._lock:
            ctx, self._current = self._current, None
        if ctx is None:
            return None
        if self._clock() > ctx.expires_at:
            log.info("EHR context had expired when a card started",
                     extra={"patient": mask_patient(ctx.patient), "set_by": ctx.set_by})
            return dataclasses.replace(ctx, expired=True)
        return ctx

    def peek(self) -> ExpectedContext | None:
        """The current context without consuming it (``expired`` computed now)."""
        with self._lock:
            ctx = self._current
        if ctx is None:
            return None
        return dataclasses.replace(ctx, expired=self._clock() > ctx.expires_at)

    def clear(self) -> ExpectedContext | None:
        """Forget the context (the clinician closed the record); returns what was there."""
        with self._lock:
            ctx, self._current = self._current, None
        return ctx
