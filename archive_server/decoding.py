"""Stored media are decoded in worker processes, never in the archive's own.

The archive makes pictures of what it stores (thumbnails, previews, DICOM
frames, video frames, audio waveforms: :mod:`archive_server.previews`; the
pictures of a printout: :mod:`archive_server.printing`) with Pillow, pydicom,
numpy and FFmpeg (PyAV). Those bytes came from a capture PC: a PC taken over,
or a stolen agent certificate, can store a file made to crash a decoder or to
run code in it. In the archive's own process that would reach the database's
credentials, every blob and every session. So each decode runs in a worker
process of its own pool (:func:`run`), which

- holds no database connection, no blob store and no key: it gets the bytes
  and returns a picture, through a pipe;
- may use at most :data:`MEMORY_BYTES` of data memory and write no file
  (``RLIMIT_DATA``, ``RLIMIT_FSIZE`` 0) — a decompression bomb fails there;
- is killed after :data:`TIMEOUT_S` and replaced, as is one that crashes.

Each failure of a worker is a :class:`Undecodable` for the caller (the page
shows "cannot be shown"; a printout lists the file by name), and the next call
gets a fresh worker. The pool (pebble's ``ProcessPool``: the standard library's
cannot kill one overrunning task) starts on first use, its workers from a fork
server (never forked from the archive's threads), and stops at exit.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import logging
import multiprocessing
import os
import resource
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pebble

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A decode that takes longer is stopped (its worker killed).
TIMEOUT_S = 60.0
#: Data memory of a worker: a 100 MP picture (the largest shown, printing.MAX_PIXELS)
#: decoded to 8-bit RGB and scaled is well below it.
MEMORY_BYTES = 3 << 30
#: Workers at most: decoding is CPU work, one per core up to this.
MAX_WORKERS = 4
#: A worker is replaced after this many decodes (what a decoder leaks does not pile up).
TASKS_PER_WORKER = 200

_pool: pebble.ProcessPool | None = None
_pool_lock = threading.Lock()


class Undecodable(Exception):
    """The worker decoding it crashed, ran out of memory or time: the bytes cannot be shown."""


def _limit(memory_bytes: int) -> None:
    """In each worker before its first decode: the libraries loaded (so that a
    decode does not pay for them), then the limits set."""
    import av  # noqa: F401 - loaded before the limits, as every decode needs them
    import numpy  # noqa: F401
    import pydicom  # noqa: F401
    from PIL import Image

    Image.init()
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _get_pool() -> pebble.ProcessPool:
    global _pool
    with _pool_lock:
        if _pool is None or not _pool.active:
            workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
            _pool = pebble.ProcessPool(max_workers=workers, max_tasks=TASKS_PER_WORKER,
                                       initializer=_limit, initargs=(MEMORY_BYTES,),
                                       context=multiprocessing.get_context("forkserver"))
        return _pool


def run(decode: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
    """``decode(*args)`` in a decoder worker; what it raises is raised here.

    ``decode`` must be a module-level function (it is named to the worker, not
    sent). Raises :class:`Undecodable` when the worker dies (a crash, a signal),
    runs out of data memory (``MemoryError``) or of time."""
    future = _get_pool().submit(decode, timeout_s or TIMEOUT_S, *args)
    name = getattr(decode, "__qualname__", repr(decode))
    try:
        return future.result()
    except concurrent.futures.TimeoutError:
        log.warning("decoder stopped: %s took longer than %.0f s", name, timeout_s or TIMEOUT_S)
        raise Undecodable("decoding took too long") from None
    except pebble.ProcessExpired as exc:
        log.warning("decoder died: %s: exit code %s", name, exc.exitcode)
        raise Undecodable("the decoder stopped on this file") from None
    except MemoryError:
        log.warning("decoder out of memory: %s (limit %d MiB)", name, MEMORY_BYTES >> 20)
        raise Undecodable("decoding it needs more memory than a picture may take") from None


def stop() -> None:
    """Stop the workers (at exit; tests)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.stop()
            _pool.join(timeout=10)
            _pool = None


atexit.register(stop)
