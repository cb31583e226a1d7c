"""Reading a card on every core (issue 12): one reader process per core.

The scan (hash, format, the content check of R8) and the identify stage (R3,
R4) parse what anyone can put on a card, and zxing-cpp holds the GIL: threads
do not help, processes do. :class:`CardReaders` is a process pool for one card:

- one worker per core (``os.sched_getaffinity``), each holding at most one
  file and its decode at a time (memory bounded by the number of cores); the
  pool lives as long as the card's reading and is shut down with it;
- the workers start when the pool is entered, so that they inherit no
  descriptor opened later (enter it before the exiftool reader starts);
- each worker is confined before it reads a byte (:func:`agent.card.sandbox.confine`
  as the pool's initializer): as root it becomes the parser user when that user
  can reach the card and the spool (the daemon's layout: 0711 folders on the
  way, cards mounted for the parser's group), else it stays root but keeps only
  Landlock, seccomp and a new network namespace, and a warning says so (a
  folder under root's 0700 home given to ``ingest``); the first task logs the
  user the workers read as; what is needed is imported first;
- tesseract runs in the worker itself (:mod:`bildsluss_common.readers.tesseract`,
  single-threaded; ``OMP_THREAD_LIMIT=1`` besides, for any OpenMP build): the
  reading budget is CPU time and decides how long a frame is read, never what
  is read; an idle and a loaded PC get the same outcome, and the cores are
  used by reading several frames at once instead. Its model is loaded before
  the worker is confined and before any frame's budget starts (a first frame
  must not pay for it): once in the forking process where the workers are
  forked (they share its pages), else by each worker as it starts.

**One decode per file.** A JPEG's content check is its reduced decode
(:func:`agent.card.identify.open_reduced`: DCT-scaled, every entropy-coded
block is still decoded), and the same worker reads that picture for identity
at once (:func:`agent.card.identify.read_media` with ``reduced``), so a middle
frame is decoded once. Whether a picture must show the number (R3: the first
and last of a series) is only known once the whole card is ordered: those
few are read again, as :func:`agent.card.identify.identify` would, and their
early reading is dropped; every other reading is exactly the serial one
(a photo series' middle picture: decoded at a quarter of its width for 12 MP,
:func:`agent.card.identify.middle_reduction`).

**While the workers read.** This process takes each file's result in card
order and meanwhile (1) hands the pipeline the copy of a JPEG the worker
stripped right after its scan, from the bytes it had just hashed
(``on_stripped``: taken back at once, see :mod:`agent.card.pipeline`) and (2) has exiftool read the files whose
content check passed, a batch at a time on a thread, so that the scan does not
end with one exiftool read of the whole card (the pipeline's read-back of the
copies stripped ahead runs on that thread too, :meth:`CardReaders.exiftool_meanwhile`).

**The strip stage** runs here too (issue 13): :meth:`CardReaders.strip_later`
has a worker write a file's checked copy into the parsers' own folder
(``parse/``, with the SHA-256 of what its checks saw); :meth:`CardReaders.take_back`
copies it into root's own file, hashing it (:mod:`agent.card.strip.takeback`).
A PNG or TIFF is rewritten by an exiftool the worker starts (confined as it is).
A strip task waits behind the card's reading in the queue; its hang guard counts
from when a worker takes it.

A worker that dies (BrokenProcessPool) or a file not read within
:data:`FILE_TIMEOUT_S` stops the card with ``INTERNAL_ERROR`` (card untouched):
a card is never judged on files that were not read.
"""
from __future__ import annotations

import concurrent.futures
import functools
import importlib
import logging
import multiprocessing
import multiprocessing.context
import os
import pathlib
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from agent.card import identify as identify_stage
from agent.card import parser_results
from agent.card import sandbox
from agent.card import scan as scan_stage
from agent.card import strip as strip_stage
from agent.card.identify import FileReading, IdentifyResult
from agent.card.metadata import MetadataReader
from agent.card.model import MediaFile, MediaKind, Mode, ScanResult, StageError
from agent.card.reasons import Reason
from agent.card.strip.common import Written, fail, sha256_file
from agent.card.strip.takeback import TakeBack

log = logging.getLogger(__name__)

# A hang guard only (a parser stuck in a loop): reading budgets are CPU seconds
# per frame and a video or DICOM file has many frames; a loaded PC stretches wall time.
FILE_TIMEOUT_S = 600.0
_POLL_S = 5.0  # how often a task queued behind others is looked at (:meth:`CardReaders._waited`)

# What a worker imports before it is confined (it may lose access to the Python
# installation afterwards); the optional readers only if installed.
_PRELOAD = ("agent.card.identify", "agent.card.scan", "agent.card.metadata",
            "bildsluss_common.readers.barcode", "agent.card.strip",
            "concurrent.futures.thread")  # the strip stage's PNG/TIFF check decodes on threads
_OPTIONAL = ("bildsluss_common.readers.ocr", "bildsluss_common.readers.dicom", "agent.card.video",
             "pydicom", "numpy", "agent.card.strip.dicom")

Progress = Callable[[int, int], None]  # (files done, files in all)


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# -- in the worker ---------------------------------------------------------------------


def _start_worker(confinement: sandbox.Confinement | None) -> None:
    os.environ["OMP_THREAD_LIMIT"] = "1"  # tesseract, one thread (see the module notes)
    from PIL import Image

    Image.init()  # every plugin, before the installation may be out of reach
    for name in _PRELOAD:
        importlib.import_module(name)
    # Landlock lets a confined worker read no Python source outside the system paths
    # (an editable install, a developer's pyenv): every reader is imported first. An
    # unconfined worker (not root) imports one when a file needs it.
    for name in _OPTIONAL if confinement is not None else ():
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _warm_ocr()  # inherited from the forking process where it loaded it: nothing to do
    if confinement is not None:
        sandbox.confine(confinement)


def _warm_ocr() -> None:
    """Load tesseract's model (see the module notes); without one, OCR reads nothing
    (the frames that need it are refused, as when tesseract is missing) and a warning says so."""
    try:
        from bildsluss_common.readers import tesseract
        tesseract.warm()
    except ImportError:
        pass  # no OCR reader installed: identify skips OCR or refuses (ultrasound)
    except tesseract.TesseractError as exc:
        log.warning("OCR is not available: %s", exc)


def _early_required(mode: Mode) -> bool | None:
    """How a JPEG is read at once, before the card's order is known: with
    ``required`` False (the photo series' middle frames), True (assault: every
    picture), None: not at once (ultrasound reads the overlay on a full decode)."""
    if mode is Mode.ULTRASOUND:
        return None
    return mode is Mode.ASSAULT


def _image(entry: Any, probed: Any) -> MediaFile | None:
    """The media file of an image the scan accepted (else None)."""
    if probed.refusal or probed.unsafe or probed.fmt is None or probed.kind is not MediaKind.IMAGE:
        return None
    return MediaFile(path=entry.path, relative_path=entry.rel, kind=MediaKind.IMAGE,
                     media_type=probed.fmt.media_type, size=entry.st.st_size, sha256=probed.sha256,
                     mtime_ns=entry.st.st_mtime_ns)


def _probe_and_read(root: pathlib.Path, entry: Any, max_pixels: int, mode: Mode, budget_s: float,
                    reserve_formats: Sequence[Any], strip_into: pathlib.Path | None = None
                    ) -> tuple[Any, FileReading | None, Written | None]:
    """Scan one file and, for a JPEG, read it for identity from the same decode;
    with ``strip_into``, strip a JPEG there from the bytes just hashed (None when
    that fails: the strip stage strips it again and judges)."""
    required = _early_required(mode)
    reduction = None if required is False else 2  # None: a middle picture's (identify.middle_reduction)
    reduce = functools.partial(identify_stage.open_reduced, reduction=reduction) if required is not None else None
    probed = scan_stage.probe_entry(root, entry, max_pixels, reduce=reduce, keep_jpeg=strip_into is not None)
    reduced, probed.reduced = probed.reduced, None  # the picture stays here
    data, probed.data = probed.data, None  # and so do the bytes
    media = _image(entry, probed)
    reading = early = None
    if reduced is not None and media is not None:
        reading = identify_stage.read_media(media, mode, required=bool(required), budget_s=budget_s,
                                            reserve_formats=reserve_formats, reduced=reduced)
    if strip_into is not None and media is not None and media.media_type == "image/jpeg":
        try:
            early = strip_stage.strip_ahead(media, strip_into, data)
        except Exception:  # noqa: BLE001 - judged by the strip stage, after the decision
            early = None
    return probed, reading, early


def _read(media: MediaFile, mode: Mode, required: bool, budget_s: float,
          reserve_formats: Sequence[Any]) -> FileReading | None:
    return identify_stage.read_media(media, mode, required=required, budget_s=budget_s,
                                     reserve_formats=reserve_formats)


# The exiftool a reader process rewrites PNG and TIFF with (started, confined as
# the process is, at the first such file; it ends with the process).
_strip_exiftool: MetadataReader | None = None


def _strip_reader() -> MetadataReader:
    global _strip_exiftool
    if _strip_exiftool is None or not _strip_exiftool.running:
        _strip_exiftool = MetadataReader()
    return _strip_exiftool


def _strip(media: MediaFile, scratch: pathlib.Path) -> Written:
    """One file's checked copy, written into the parsers' own folder, with the
    SHA-256 and size of what was checked (root takes it back: :class:`TakeBack`)."""
    written = strip_stage.write_one(media, scratch, _strip_reader)
    if not written.sha256:
        written.sha256, written.size = sha256_file(written.out)
    return written


# -- in the pipeline -------------------------------------------------------------------


def _reachable_by(path: pathlib.Path, uid: int, gid: int, *, read: bool) -> bool:
    """Whether ``uid``/``gid`` may enter every folder down to ``path`` (and, with
    ``read``, list and read ``path`` itself); file modes only, as the kernel judges them."""
    def allows(st: os.stat_result, bits: tuple[int, int, int]) -> bool:
        if st.st_uid == uid:
            return bool(st.st_mode & bits[0])
        if st.st_gid == gid:
            return bool(st.st_mode & bits[1])
        return bool(st.st_mode & bits[2])

    try:
        path = path.resolve()
        for folder in [*reversed(path.parents), path]:
            if not allows(os.stat(folder), (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
                return False
        return not read or allows(os.stat(path), (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))
    except OSError:
        return False


def confinement_for(card: pathlib.Path, spool_dir: pathlib.Path) -> sandbox.Confinement | None:
    """The workers' confinement; None when not root (the agent's own user reads).

    The parsers write only their own folder inside the card's spool folder
    (``parse``, handed over to the parser user): the stripped copies beside it
    stay root's (0600), so a parser can neither change nor swap what is sent.
    """
    if os.geteuid() != 0:
        return None
    scratch = spool_dir / "parse"
    scratch.mkdir(mode=0o700, exist_ok=True)
    confinement = sandbox.confinement_for(card, scratch)
    assert confinement.uid is not None and confinement.gid is not None
    if _reachable_by(card, confinement.uid, confinement.gid, read=True) and \
            _reachable_by(spool_dir.parent, confinement.uid, confinement.gid, read=False):
        os.chmod(spool_dir, 0o711)  # enter, to its own folder; not list
        sandbox.hand_over(confinement)
        return confinement
    log.warning("the parser user cannot reach the card or the spool; card parsed as root, "
                "confined by Landlock and seccomp only", extra={"card": str(card)})
    return sandbox.Confinement(confinement.read, confinement.write)


class _MetadataBatches:
    """exiftool reads the files already probed, a batch at a time, on a thread of
    this process (exiftool is a process of its own), while the reader processes
    probe the rest: the scan no longer waits for one read of the whole card at its
    end. Only files that passed their content check are given to exiftool, as before.
    Each probe gets its ``meta``; a failed batch leaves its probes without, and
    scan() reads those itself (and raises what it raises)."""

    BATCH = 16

    def __init__(self, reader: MetadataReader | None, card_reader: MetadataReader | None = None) -> None:
        self.reader = reader  # the pipeline's (stripped copies: ``submit``)
        self.card_reader = card_reader or reader  # the card's files (confined where the workers are)
        self.pending: list[Any] = []
        self.thread: concurrent.futures.ThreadPoolExecutor | None = None
        self.batches: list[concurrent.futures.Future[None]] = []

    def __enter__(self) -> _MetadataBatches:
        if self.card_reader is not None:
            self.thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="exiftool")
        return self

    def add(self, probed: Any) -> None:
        if self.thread is None:
            return
        self.pending.append(probed)
        if len(self.pending) >= self.BATCH:
            self._flush()

    def submit(self, work: Callable[[MetadataReader], None]) -> bool:
        """Run ``work`` with the reader on the exiftool thread (waited for with
        the batches); False when there is no such thread."""
        if self.thread is None or self.reader is None:
            return False
        reader = self.reader
        self.batches.append(self.thread.submit(work, reader))
        return True

    def _flush(self) -> None:
        if self.thread is not None and self.pending:
            self.batches.append(self.thread.submit(self._read, self.pending))
            self.pending = []

    def _read(self, probes: list[Any]) -> None:
        assert self.card_reader is not None
        metas = self.card_reader.read([p.entry.path for p in probes])
        for p in probes:
            p.meta = metas.get(p.entry.path)

    def __exit__(self, *exc: object) -> None:
        if self.thread is None:
            return
        if exc[0] is None:
            self._flush()
        concurrent.futures.wait(self.batches)
        self.thread.shutdown(wait=True)
        for batch in self.batches:
            if batch.exception() is not None:
                log.warning("exiftool could not read a batch during the scan; read again after it",
                            extra={"detail": str(batch.exception())})


def _worker_user() -> tuple[int, int]:
    """(pid, uid) of a worker: its first task, which also starts it."""
    return os.getpid(), os.geteuid()


class CardReaders:
    """The reader processes of one card (a context manager); see the module notes."""

    def __init__(self, card: pathlib.Path, spool_dir: pathlib.Path, mode: Mode, *, budget_s: float,
                 reserve_formats: Sequence[Any] = (), workers: int | None = None) -> None:
        self.card, self.mode, self.budget_s = card, mode, budget_s
        self.reserve_formats = tuple(reserve_formats)
        self.workers = workers or cores()
        self.confinement = confinement_for(card, spool_dir)
        # The strip stage's copies are written here by the reader processes and
        # taken back by this one (:class:`TakeBack`); handed over as root.
        self.spool_dir, self.scratch = spool_dir, spool_dir / "parse"
        self.scratch.mkdir(mode=0o700, exist_ok=True)
        confined = self.confinement
        # The read-back's exiftool reads root's copies (group-readable while it
        # does) as well as the card: their folder is readable to it, nothing else.
        self.readback_confinement = None if confined is None else sandbox.Confinement(
            (*confined.read, str(spool_dir)), confined.write, confined.uid, confined.gid)
        self._take_back: TakeBack | None = None
        self._early: dict[tuple[str, str], FileReading | None] = {}
        self.on_probed: Progress | None = None  # files probed, files on the card (for people)
        # Whether the workers strip each JPEG as they scan it (given the bytes of
        # every file on the card; asked once, before the scan), and what takes
        # each such copy, in card order, in this process (the pipeline).
        self.strip_ahead: Callable[[int], bool] | None = None
        self.on_stripped: Callable[[MediaFile, Written], None] | None = None
        # Once every file's result is in, while the scan's exiftool thread still
        # takes work (:meth:`exiftool_meanwhile`): the pipeline's last read-back batch.
        self.on_read: Callable[[], None] | None = None
        self.worker_uid: int | None = None  # the user a worker reads as, once one has started
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._metadata: MetadataReader | None = None
        self._card_metadata: MetadataReader | None = None
        self._exiftool: _MetadataBatches | None = None

    def __enter__(self) -> CardReaders:
        # fork is cheapest (the parent's imports are inherited) but safe only in a
        # process without threads (the CLI); the daemon has threads (gRPC, the desk,
        # other cards): its workers come from a clean fork server with the imports preloaded.
        context: multiprocessing.context.BaseContext
        if threading.active_count() == 1:
            context = multiprocessing.get_context("fork")
            _warm_ocr()  # once here, shared by the forked workers
        else:
            server = multiprocessing.get_context("forkserver")
            server.set_forkserver_preload([*_PRELOAD, *_OPTIONAL])
            context = server
        parser_uid = self.confinement.uid if self.confinement is not None else None
        self._take_back = TakeBack(self.scratch, self.spool_dir,
                                   owner=parser_uid if parser_uid is not None else os.geteuid(),
                                   share_gid=self.confinement.gid if self.confinement is not None
                                   and parser_uid is not None else None)
        # What the workers send back is unpickled as data only (a reader taken over by
        # a crafted file must not be able to send root a pickle that runs code).
        self._pool = parser_results.guard(concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=_start_worker,
            initargs=(self.confinement,)))
        # Forked workers start now, at the first task: before the caller opens
        # anything a confined reader must not inherit (the exiftool process's pipes).
        self._pool.submit(_worker_user).add_done_callback(self._started)
        return self

    def _started(self, future: concurrent.futures.Future[tuple[int, int]]) -> None:
        """Log which user the card's parsers run as (seen from a worker itself)."""
        if future.cancelled() or future.exception() is not None:
            return  # a worker that could not start: the card's first read says so
        pid, uid = future.result()
        self.worker_uid = uid
        log.info("card readers started", extra={"card": str(self.card), "workers": self.workers,
                                                "uid": uid, "pid": pid})

    def __exit__(self, *exc: object) -> None:
        self.close(failed=exc[0] is not None)

    def close(self, *, failed: bool = False) -> None:
        if self._take_back is not None:
            self._take_back.close()
            self._take_back = None
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if failed:
            # A hung parser must not outlive the card: stop the workers now.
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                if process.is_alive():
                    process.kill()
        else:
            pool.shutdown(wait=True)

    # -- the stages ------------------------------------------------------------------

    def probe_all(self, root: pathlib.Path, entries: Sequence[Any], max_pixels: int) -> list[Any]:
        """``scan.scan``'s ``probe_all``: each file probed, a JPEG read at once; with a
        metadata reader, exiftool reads the probed files in batches meanwhile."""
        ahead = self.strip_ahead is not None and self.strip_ahead(sum(e.st.st_size for e in entries))
        futures = [self._submit(_probe_and_read, root, e, max_pixels, self.mode, self.budget_s,
                                self.reserve_formats, self.scratch if ahead else None) for e in entries]
        with _MetadataBatches(self._metadata, self._card_metadata) as metadata:
            self._exiftool = metadata
            try:
                probes = self._collect(entries, futures, metadata)
                if self.on_read is not None:
                    self.on_read()
            finally:
                self._exiftool = None
        return probes

    def exiftool_meanwhile(self, work: Callable[[MetadataReader], None]) -> bool:
        """While the scan runs: ``work`` on the scan's exiftool thread (the scan
        waits for it); False, and nothing run, at any other time."""
        return self._exiftool is not None and self._exiftool.submit(work)

    def _collect(self, entries: Sequence[Any], futures: Sequence[concurrent.futures.Future[Any]],
                 metadata: _MetadataBatches) -> list[Any]:
        probes = []
        for entry, future in zip(entries, futures):
            probed, reading, early = self._result(future, entry.rel)
            if not probed.refusal and not probed.unsafe and probed.kind not in (None, MediaKind.DICOM):
                metadata.add(probed)
            if reading is not None:
                self._early[(entry.rel, probed.sha256)] = reading
            probes.append(probed)
            media = _image(entry, probed)  # root's own account of the file, not the worker's
            if early is not None and media is not None and self.on_stripped is not None:
                self.on_stripped(media, early)
            if self.on_probed is not None:
                self.on_probed(len(probes), len(entries))
        return probes

    def scan(self, root: pathlib.Path, **options: Any) -> ScanResult:
        self._metadata = options.get("reader")
        # The card's metadata is read by an exiftool confined as the workers are;
        # the pipeline's own (root's) reads only the stripped copies.
        reader = self._metadata
        if self.confinement is None or (reader is not None and self.readback_confinement is not None
                                        and reader.confinement is self.readback_confinement):
            card_reader = None  # the pipeline's own reads the card as confined as the workers
        else:
            card_reader = MetadataReader(confinement=self.confinement)
        self._card_metadata = card_reader
        try:
            return scan_stage.scan(root, probe_all=self.probe_all,
                                   **{**options, "reader": card_reader or self._metadata})
        finally:
            self._metadata = self._card_metadata = None
            if card_reader is not None:
                card_reader.close()

    def start_identify(self, scan: ScanResult) -> Callable[[Progress | None], IdentifyResult]:
        """Submit what is left to read of the card; returns the function that waits for it.

        The caller may do other work meanwhile (strip the files into the spool)."""
        positions = identify_stage.required_positions(scan.media, self.mode)
        early_required = _early_required(self.mode)
        plan: list[tuple[MediaFile, FileReading | None | concurrent.futures.Future[Any]]] = []
        for m in scan.media:
            required = m.relative_path in positions
            key = (m.relative_path, m.sha256)
            if key in self._early and early_required == required and m.kind is MediaKind.IMAGE:
                plan.append((m, self._early[key]))
            elif m.kind is not MediaKind.AUDIO:  # audio: the EHR context names the patient
                plan.append((m, self._submit(_read, m, self.mode, required, self.budget_s,
                                             self.reserve_formats)))

        def wait(progress: Progress | None = None) -> IdentifyResult:
            readings: list[FileReading | None] = []
            for done, (m, planned) in enumerate(plan, 1):
                if isinstance(planned, concurrent.futures.Future):
                    planned = self._result(planned, m.relative_path)
                readings.append(planned)
                if progress is not None:
                    progress(done, len(plan))
            return identify_stage.gather(readings)

        return wait

    def strip_later(self, media: MediaFile) -> concurrent.futures.Future[Written | None]:
        """``media`` stripped in a reader process into the parsers' own folder
        (:func:`_strip`); :meth:`take_back` takes the copy."""
        return self._submit(_strip, media, self.scratch)

    def take_back_now(self, written: Written, media: MediaFile) -> Written:
        """:meth:`take_back` of a copy a worker has already returned."""
        if self._take_back is None:
            raise RuntimeError("CardReaders used outside its with block")
        return self._take_back(written, media)

    def take_back(self, future: concurrent.futures.Future[Written | None], media: MediaFile) -> Written:
        """Wait for a :meth:`strip_later` and take its copy back into the spool
        folder: root's own copy, hashed by this process (:class:`TakeBack`)."""
        if self._take_back is None:
            raise RuntimeError("CardReaders used outside its with block")
        written = self._waited(future, media.relative_path)
        if written is None:
            raise fail(media, "not stripped")
        return self._take_back(written, media)

    # -- futures -----------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        if self._pool is None:
            raise RuntimeError("CardReaders used outside its with block")
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool as exc:
            raise self._died(exc) from exc

    def _result(self, future: concurrent.futures.Future[Any], what: str) -> Any:
        try:
            return future.result(timeout=FILE_TIMEOUT_S)
        except BrokenProcessPool as exc:
            raise self._died(exc) from exc
        except concurrent.futures.TimeoutError:
            raise StageError(Reason.INTERNAL_ERROR,
                             f"{what}: not read within {FILE_TIMEOUT_S:.0f} s; the card was not judged") from None
        except sandbox.SandboxError as exc:
            raise StageError(Reason.INTERNAL_ERROR, f"a reader could not be confined: {exc}") from exc

    def _waited(self, future: concurrent.futures.Future[Any], what: str) -> Any:
        """:meth:`_result` of a task that may wait long behind others (the strip
        stage's, queued after the card's reading): the hang guard counts from when
        it is given to a reader process, not from the call."""
        running_since: float | None = None
        while True:
            if concurrent.futures.wait([future], timeout=_POLL_S).done:
                return self._result(future, what)
            if future.running() and running_since is None:
                running_since = time.monotonic()
            if running_since is not None and time.monotonic() - running_since > FILE_TIMEOUT_S:
                raise StageError(Reason.INTERNAL_ERROR,
                                 f"{what}: not stripped within {FILE_TIMEOUT_S:.0f} s; the card was not judged")

    @staticmethod
    def _died(exc: BaseException) -> StageError:
        log.error("a reader process died while reading the card", extra={"detail": str(exc)})
        return StageError(Reason.INTERNAL_ERROR, f"a reader process died while reading the card: {exc}")
