"""What one agent may hold of the archive at once (issue 13, denial of service).

A review showed one agent could declare a 1,600 GiB session, open 300
sessions and send a 7 MiB chunk, and that 32 idle ``Write`` streams took every
worker thread so that the health check timed out. The limits, each with its
status code and a sentence saying what to do (``archive.toml``):

* a chunk carries at most ``MAX_CHUNK_BYTES`` (1 MiB): INVALID_ARGUMENT;
* ``agent_max_open_sessions`` uncommitted sessions opened in the last
  ``OPEN_WINDOW`` per agent, and ``agent_max_declared_bytes`` declared by them:
  RESOURCE_EXHAUSTED (a session declaring more than the limit on its own:
  INVALID_ARGUMENT, it never fits);
* ``max_write_streams`` (¾ of the workers) Write streams at once over all agents, fewer than the
  worker threads, so that every other call and the health check keep threads;
  ``agent_max_write_streams`` of them for one agent: RESOURCE_EXHAUSTED. What
  an agent has in flight is then at most that many chunks in memory, and on
  disk at most the blobs it declared;
* a Write stream that sends nothing for ``write_idle_timeout_s`` is cancelled
  (the client sees CANCELLED; what was durable stays resumable).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from archive_server.errors import ResourceExhausted

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CHUNK_BYTES = 1 << 20
#: Sessions opened longer ago than this no longer count against their agent
#: (an abandoned card must not lock an agent out for good).
OPEN_WINDOW = dt.timedelta(hours=24)


@dataclasses.dataclass
class _Stream:
    cancel: Callable[[], None]
    last: float
    agent: str | None = None
    idle: bool = False


class WriteStreams:
    """The Write streams in progress; see the module docstring. ``stream()`` for
    each Write call; a watchdog thread cancels idle ones."""

    def __init__(self, max_total: int, per_agent: int, idle_s: float) -> None:
        self.max_total, self.per_agent, self.idle_s = max_total, per_agent, idle_s
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    @contextlib.contextmanager
    def stream(self, cancel: Callable[[], None]) -> Iterator["StreamHandle"]:
        """Count a new Write stream (RESOURCE_EXHAUSTED beyond ``max_total``);
        ``cancel`` ends it if it stays silent."""
        with self._lock:
            if len(self._streams) >= self.max_total:
                raise ResourceExhausted(
                    f"the archive is receiving {len(self._streams)} uploads, its limit; "
                    "try again in a moment")
            key = next(self._ids)
            self._streams[key] = _Stream(cancel, time.monotonic())
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="write-idle", daemon=True)
                self._watchdog.start()
        try:
            yield StreamHandle(self, key)
        finally:
            with self._lock:
                self._streams.pop(key, None)

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.idle_s / 4))
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._streams.values() if not s.idle and now - s.last > self.idle_s]
                for s in idle:
                    s.idle = True
            for s in idle:
                log.warning("write stream idle, cancelled", extra={"agent": s.agent, "idle_s": self.idle_s})
                s.cancel()


class StreamHandle:
    """One counted Write stream."""

    def __init__(self, streams: WriteStreams, key: int) -> None:
        self._streams, self._key = streams, key

    def messages(self, requests: Iterator[T]) -> Iterator[T]:
        """``requests``, noting each message's arrival (the idle clock restarts)."""
        for message in requests:
            self._touch()
            yield message

    def _touch(self) -> None:
        with self._streams._lock:
            stream = self._streams._streams.get(self._key)
            if stream is not None:
                stream.last = time.monotonic()

    def belongs_to(self, agent: str) -> None:
        """The stream is ``agent``'s: RESOURCE_EXHAUSTED when the agent already
        has its limit of streams."""
        s = self._streams
        with s._lock:
            mine = sum(1 for k, x in s._streams.items() if x.agent == agent and k != self._key)
            if mine >= s.per_agent:
                raise ResourceExhausted(
                    f"agent {agent} already has {mine} uploads in progress, its limit "
                    f"(agent_max_write_streams = {s.per_agent}); send one blob after another")
            s._streams[self._key].agent = agent


def check_open_sessions(agent: str, open_sizes: list[int], declared: int, *, max_sessions: int,
                        max_bytes: int) -> None:
    """Refuse a new session of ``declared`` bytes for ``agent``, whose other
    uncommitted sessions of the window declare ``open_sizes``."""
    if declared > max_bytes:
        from archive_server.errors import InvalidArgument

        raise InvalidArgument(
            f"the session declares {declared} bytes, more than the {max_bytes} one agent may have "
            "open (agent_max_declared_bytes); split the card")
    if len(open_sizes) >= max_sessions:
        raise ResourceExhausted(
            f"agent {agent} has {len(open_sizes)} sessions open, its limit (agent_max_open_sessions = "
            f"{max_sessions}); commit them first, or wait: sessions older than 24 h no longer count")
    if sum(open_sizes) + declared > max_bytes:
        raise ResourceExhausted(
            f"agent {agent}'s open sessions declare {sum(open_sizes)} bytes; {declared} more would pass "
            f"its limit of {max_bytes} (agent_max_declared_bytes); commit them first")
