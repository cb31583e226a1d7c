"""The camera source: a camera on a cable (PTP, MTP) or on Wi-Fi (PTP/IP), through libgphoto2.

Many cameras show no mass-storage volume when connected; they speak PTP. This
module reaches them through libgphoto2 (the ``gphoto2`` package ships it) and
hands the card's path the same thing a card gives it: a folder of files.

1. **Who is there (R6), before any file is read.** The camera's PTP DeviceInfo
   (manufacturer, model, serial number, vendor extensions; Canon's body serial
   where its PTP serial is not the one on the label) is judged by
   :func:`judge_camera`: an Android device (its MTP extensions name
   ``android.com``), an iPhone or another phone, or a camera the department has
   not registered is refused ``UNREGISTERED_DEVICE`` and nothing is listed or
   downloaded. A "camera" that does not name itself (libgphoto2's Directory
   Browse camera on a ``disk:`` port: a folder) is judged file by file, as a
   card is. The EXIF check of every file runs later in any case.
2. **Download** every file the camera lists into a private folder of the spool
   (0700, files 0600; R11), keeping the camera's folder/name as the relative
   path. Each file's size must be what the camera listed. The folder is
   removed when the run ends, and a folder left by a killed run is removed by
   the next run (a live run holds a lock on its folder).
3. **The card's stages** (:func:`agent.card.pipeline.ingest_card`) run on that
   folder: scan, identify, decide, strip, upload, verify.
4. **Wipe = delete on the camera** (:func:`camera_wiper`), reached only after
   every receipt was verified (R10): the camera is opened again and must be
   the same camera, every file must still be listed with the size and time it
   had, then each file is deleted, and a fresh listing must no longer show
   any of them. A file the camera will not delete (protected, read-only
   storage) stays, is reported ``pending`` with ``WIPE_FAILED``, and the run
   ends archived but not wiped (exit 5).

Why the wipe does not download every file a second time to hash it (the card
wipe re-reads the card): over USB that doubles the transfer, and a camera does
not rewrite a picture in place; what can change between download and delete
(a picture added or deleted on the camera, another camera on the port) shows in
the DeviceInfo and the listing, which are checked.

Ports are libgphoto2's: ``usb:BUS,DEV``, ``ptpip:HOST``, ``disk:/PATH``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import pwd
import re
import socket
import stat
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agent.card import sandbox
from agent.card.camera_info import DEVICEINFO_WIDGETS, CameraInfo, CameraJudgement, judge_camera
from agent.card.model import MediaFile, Mode, StageError
from agent.card.outcome import FileStatus, Outcome
from agent.card.progress import CardProgress, NoProgress, Resume
from agent.card.reasons import Reason, staff_message
from agent.card.spool import FULL_ERRNOS, Spool, SpoolFull
from agent.card.wipe import WipeResult
from agent.config import AgentConfig

if TYPE_CHECKING:  # the pipeline (and its image libraries) is loaded when a camera is ingested
    from agent.card.pipeline import FileOutcome, IngestOutcome

log = logging.getLogger(__name__)

#: libgphoto2's driver for a port kind when none is given.
DEFAULT_MODELS = {"disk": "Directory Browse", "ptpip": "PTP/IP Camera"}
PTPIP_PORT = 15740  # ISO 15740 / CIPA DC-005

_DOWNLOAD_PREFIX = "camera-"
# What a camera leaves beside a clip: deleted with it (as agent.card.wipe does on a card).
_SIDECARS = (".thm", ".lrv")
# Names of media: a camera that will not hand out such a file leaves us unsure
# what it holds, so the whole camera is refused. Any other file it keeps to
# itself (catalogues, its own databases) is reported ignored and left there.
_MEDIA_NAME = re.compile(r"\.(jpe?g|jpe|png|tiff?|mp4|mov|m4a|m4v|3gp|avi|mts|m2ts|mpe?g|wav|mp3|dcm|"
                         r"hei[cf]|dng|cr[23w]|nef|nrw|arw|srw|raf|rw2|orf|pef|x3f)$", re.IGNORECASE)


class CameraNotFound(Exception):
    """No camera answers at the port (unplugged, switched off, another program holds it)."""


def _gphoto2() -> ModuleType:
    import gphoto2  # the native library loads only when a camera is used

    module: ModuleType = gphoto2
    return module


# --------------------------------------------------------------------------- the camera's files


@dataclasses.dataclass(frozen=True)
class CameraEntry:
    """One file as the camera lists it."""

    folder: str  # "/store_00010001/DCIM/100CANON" (PTP), "/DCIM/100CANON" (disk:)
    name: str
    size: int | None
    mtime: int | None  # seconds, as the camera reports it

    @property
    def relative_path(self) -> str:
        folder = self.folder.strip("/")
        return f"{folder}/{self.name}" if folder else self.name


_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def check_name(part: str, where: str) -> None:
    """Refuse a folder or file name that could leave the download folder (R8)."""
    if part in ("", ".", "..") or _BAD_NAME.search(part):
        raise StageError(Reason.UNSAFE_PATH, f"the camera lists {where} {part!r}")


class CameraConnection:
    """One open libgphoto2 session with a camera; use :meth:`open` as a context manager."""

    def __init__(self, port: str, camera: Any, gp: ModuleType) -> None:  # camera: a gphoto2.Camera
        self.port = port
        self._camera = camera
        self._gp = gp

    @classmethod
    @contextlib.contextmanager
    def open(cls, port: str, model: str | None = None) -> Iterator[CameraConnection]:
        gp = _gphoto2()
        kind = port.split(":", 1)[0]
        if kind == "disk" and not os.path.isdir(port[len("disk:"):]):
            raise CameraNotFound(f"no folder at {port}")
        model = model or DEFAULT_MODELS.get(kind)
        camera = gp.Camera()
        try:
            ports = gp.PortInfoList()
            ports.load()
            camera.set_port_info(ports[ports.lookup_path(port)])
            if model:
                abilities = gp.CameraAbilitiesList()
                abilities.load()
                camera.set_abilities(abilities[abilities.lookup_model(model)])
            camera.init()
        except gp.GPhoto2Error as exc:
            raise CameraNotFound(f"no camera answers at {port}"
                                 + (f" as {model!r}" if model else "") + f": {exc}") from None
        try:
            yield cls(port, camera, gp)
        finally:
            try:
                camera.exit()
            except gp.GPhoto2Error:
                pass  # a camera pulled meanwhile: nothing left to close

    def info(self) -> CameraInfo:
        """DeviceInfo through libgphoto2's status widgets (drivers without them give none)."""
        fields: dict[str, str] = {}
        for widget, field in DEVICEINFO_WIDGETS.items():
            try:
                value = self._camera.get_single_config(widget).get_value()
            except self._gp.GPhoto2Error:
                continue
            fields[field] = " ".join(str(value or "").split())
        if fields.get("body_serial") == fields.get("serial"):
            fields.pop("body_serial", None)
        return CameraInfo(port=self._camera.get_port_info().get_path() or self.port,
                          driver=self._camera.get_abilities().model, **fields)

    def list_files(self) -> list[CameraEntry]:
        """Every file on the camera, folder by folder; names are checked (R8)."""
        out: list[CameraEntry] = []
        self._walk("/", out)
        return out

    def _walk(self, folder: str, out: list[CameraEntry]) -> None:
        files = self._camera.folder_list_files(folder)
        for i in range(files.count()):
            name = files.get_name(i)
            check_name(name, f"a file in {folder}:")
            info = self._camera.file_get_info(folder, name).file
            fields = info.fields
            out.append(CameraEntry(
                folder, name,
                info.size if fields & self._gp.GP_FILE_INFO_SIZE else None,
                info.mtime if fields & self._gp.GP_FILE_INFO_MTIME else None,
            ))
        folders = self._camera.folder_list_folders(folder)
        for i in range(folders.count()):
            name = folders.get_name(i)
            check_name(name, f"a folder in {folder}:")
            self._walk(folder.rstrip("/") + "/" + name, out)

    def download(self, entry: CameraEntry, root: pathlib.Path) -> pathlib.Path:
        """Copy one file into ``root`` (a private folder) under its camera path.

        Where ``root`` is the card parsers' group's to read (:func:`download_area` as
        root), its folders (0750) and files (0640) are too, as on a mounted card."""
        dest = root / entry.relative_path
        info = root.stat()
        parser_gid = _parser_gid()
        group = parser_gid if parser_gid is not None and info.st_gid == parser_gid \
            and info.st_mode & stat.S_IRGRP else None
        folder = root
        for part in pathlib.PurePath(entry.relative_path).parent.parts:
            folder = folder / part
            if not folder.is_dir():
                folder.mkdir(mode=0o700)
                if group is not None:
                    os.chown(folder, -1, group)
                    os.chmod(folder, 0o750)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        if group is not None:
            os.fchown(fd, -1, group)
            os.fchmod(fd, 0o640)
        try:
            self._get_into(entry, fd)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        got = dest.stat().st_size
        if entry.size is not None and got != entry.size:
            # libgphoto2's drivers do not all report a short read as an error.
            raise StageError(Reason.CARD_UNREADABLE,
                             f"{entry.relative_path}: the camera gave {got} of {entry.size} bytes")
        if entry.mtime:
            os.utime(dest, (entry.mtime, entry.mtime))
        return dest

    def _get_into(self, entry: CameraEntry, fd: int) -> None:
        """Stream the file into ``fd``: a clip never sits in memory whole.

        python-gphoto2 (2.6) deprecates handing file_get a CameraFile to fill,
        but it is the only way libgphoto2 streams to a descriptor (gp_file_new_from_fd;
        file_read is not offered by the directory or PTP drivers for this). If a
        later python-gphoto2 drops it, the file is fetched into memory instead.
        """
        gp = self._gp
        target = gp.CameraFile(os.dup(fd))  # libgphoto2 closes the descriptor it is given
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._camera.file_get(entry.folder, entry.name, gp.GP_FILE_TYPE_NORMAL, target)
            return
        except TypeError:
            pass  # the in/out form is gone
        finally:
            del target
        data = self._camera.file_get(entry.folder, entry.name, gp.GP_FILE_TYPE_NORMAL).get_data_and_size()
        with os.fdopen(os.dup(fd), "wb") as out:
            out.write(memoryview(data))

    def kept_back(self, exc: Exception, entry: CameraEntry) -> bool:
        """True when the camera will not hand out a file that is no media (see _MEDIA_NAME)."""
        return (getattr(exc, "code", None) == self._gp.GP_ERROR_NOT_SUPPORTED
                and not _MEDIA_NAME.search(entry.name))

    def delete(self, entry: CameraEntry) -> None:
        self._camera.file_delete(entry.folder, entry.name)

    @property
    def error(self) -> type[Exception]:
        error: type[Exception] = self._gp.GPhoto2Error
        return error


# --------------------------------------------------------------------------- the private download folder


@contextlib.contextmanager
def download_area(spool_root: pathlib.Path) -> Iterator[pathlib.Path]:
    """A fresh private folder in the spool (R11), locked while this run lives, removed
    after it: a session folder of the card spool (:meth:`Spool.session`, which first
    removes the folders of killed runs, a card's or a camera's)."""
    with Spool(spool_root).session(f"{_DOWNLOAD_PREFIX}{uuid.uuid4()}") as folder:
        parser_gid = _parser_gid()
        if parser_gid is not None:
            # Root's, read by the card's parsers (bildsluss-parse's group) as a mounted card is.
            os.chown(folder, 0, parser_gid)
            os.chmod(folder, 0o750)
        yield folder


def _parser_gid() -> int | None:
    """The card parsers' group where they switch to it (root, the user exists)."""
    if os.geteuid() != 0:
        return None
    try:
        gid = pwd.getpwnam(sandbox.PARSER_USER).pw_gid
    except KeyError:
        return None
    return gid or None


# --------------------------------------------------------------------------- wipe = delete on the camera


Opener = Callable[[], contextlib.AbstractContextManager[CameraConnection]]


def camera_wiper(open_camera: Opener, first: CameraInfo, listed: Mapping[str, CameraEntry]
                 ) -> Callable[[pathlib.Path, Sequence[MediaFile]], WipeResult]:
    """The pipeline's wipe step for a camera (see the module docstring, step 4)."""

    def wipe_camera(root: pathlib.Path, media: Sequence[MediaFile]) -> WipeResult:
        deleted: list[str] = []
        failed: list[tuple[str, str]] = []
        housekeeping: list[str] = []
        try:
            with open_camera() as cam:
                if not cam.info().same_camera(first):
                    raise StageError(Reason.CARD_CHANGED, f"another camera answers at {first.port} now")
                now = {e.relative_path: e for e in cam.list_files()}
                _check_unchanged(media, listed, now)
                for m in media:
                    try:
                        cam.delete(listed[m.relative_path])
                    except cam.error as exc:
                        failed.append((m.relative_path, f"the camera refused to delete it: {exc}"))
                    else:
                        deleted.append(m.relative_path)
                for entry in _sidecars_of(deleted, now.values()):
                    try:
                        cam.delete(entry)
                    except cam.error as exc:
                        failed.append((entry.relative_path, f"the camera refused to delete it: {exc}"))
                    else:
                        housekeeping.append(entry.relative_path)
            # The driver's own listing is a cache: a fresh session asks the camera.
            with open_camera() as cam:
                left = {e.relative_path for e in cam.list_files()}
        except CameraNotFound as exc:
            raise StageError(Reason.CARD_REMOVED, str(exc)) from None
        except _gphoto2().GPhoto2Error as exc:  # the listing or DeviceInfo failed midway
            done = f"; deleted before it: {', '.join(deleted)}" if deleted else ""
            raise StageError(Reason.WIPE_FAILED, f"libgphoto2: {exc}{done}") from None
        for path in [p for p in deleted + housekeeping if p in left]:
            (deleted if path in deleted else housekeeping).remove(path)
            failed.append((path, "still on the camera after it said it was deleted"))
        return WipeResult(tuple(deleted), tuple(failed), tuple(housekeeping))

    return wipe_camera


def _check_unchanged(media: Sequence[MediaFile], listed: Mapping[str, CameraEntry],
                     now: Mapping[str, CameraEntry]) -> None:
    changed = []
    for m in media:
        before, after = listed[m.relative_path], now.get(m.relative_path)
        if after is None:
            changed.append((m.relative_path, "file is gone"))
        elif (after.size, after.mtime) != (before.size, before.mtime):
            changed.append((m.relative_path, "size or time changed"))
    if media and len(changed) == len(media) and all(why == "file is gone" for _, why in changed):
        raise StageError(Reason.CARD_REMOVED, f"none of the {len(media)} media files is on the camera any more")
    if changed:
        raise StageError(Reason.CARD_CHANGED, "; ".join(f"{p}: {why}" for p, why in changed))


def _sidecars_of(deleted: Sequence[str], entries: Iterable[CameraEntry]) -> list[CameraEntry]:
    stems = {p.rsplit(".", 1)[0].casefold() for p in deleted}
    return [e for e in entries
            if e.name.casefold().endswith(_SIDECARS)
            and e.relative_path.rsplit(".", 1)[0].casefold() in stems
            and e.relative_path not in deleted]


# --------------------------------------------------------------------------- one camera, start to finish


@dataclasses.dataclass(frozen=True)
class CameraRequest:
    port: str  # usb:BUS,DEV | ptpip:HOST | disk:/PATH
    department: str
    mode: Mode = Mode.PHOTO
    expect: str | None = None
    model: str | None = None  # libgphoto2's camera model (driver); default by port kind


# Sentences for staff where the card's would name the wrong thing.
CAMERA_MESSAGES: dict[Reason, str] = {
    Reason.UNREGISTERED_DEVICE: (
        "This camera or phone is not registered for this department. Nothing was copied, "
        "sent or deleted; use the department's camera."
    ),
    Reason.WIPE_FAILED: (
        "The pictures are safely in the archive, but the camera would not delete some of them "
        "(they may be protected, or the camera's card locked). Do not use the camera for the "
        "next patient: delete them on the camera, or ask IT for help."
    ),
    Reason.CARD_REMOVED: (
        "The camera was disconnected or switched off before the work was done. Nothing was "
        "deleted; connect it again to try again."
    ),
    Reason.CARD_CHANGED: (
        "The pictures on the camera changed while they were being copied. Nothing was deleted; "
        "connect the camera again to try again."
    ),
    Reason.CARD_UNREADABLE: (
        "The pictures could not be read from the camera. Nothing was sent and nothing was "
        "deleted; connect it again, or take out its card and use a card reader."
    ),    Reason.SPOOL_FULL: (
        "This computer has no room left to copy the pictures from the camera. Nothing was "
        "sent and nothing was deleted; leave the pictures on the camera and contact IT."
    ),
}


def camera_message(reason: Reason) -> str:
    if reason in CAMERA_MESSAGES:
        return CAMERA_MESSAGES[reason]
    return re.sub(r"\b([Tt])he card\b", lambda m: f"{m.group(1)}he camera", staff_message(reason))


def ingest_camera(request: CameraRequest, config: AgentConfig, *, progress: CardProgress | None = None,
                  resume: Resume | None = None) -> IngestOutcome:
    """One camera from DeviceInfo to delete; returns the pipeline's IngestOutcome.

    ``progress`` and ``resume`` are the pipeline's (the daemon's journal): the
    download folder holds the camera's files under the camera's own paths, so an
    interrupted run's journal applies to it as to a card.
    Raises :class:`CameraNotFound` when no camera answers at the port at the start.
    """
    from agent.card import pipeline

    progress = progress or NoProgress()

    def open_camera() -> contextlib.AbstractContextManager[CameraConnection]:
        return CameraConnection.open(request.port, request.model)

    with download_area(config.spool_dir) as folder:
        with open_camera() as cam:
            try:
                info = cam.info()
                judgement = judge_camera(info, config.devices)
                log.info("camera connected", extra={"port": request.port, "driver": info.driver,
                                                    "accepted": judgement.accepted, "why": judgement.why})
                if not judgement.accepted:
                    return pipeline.stopped(Reason.UNREGISTERED_DEVICE, judgement.why,
                                            message=camera_message(Reason.UNREGISTERED_DEVICE),
                                            evidence=(judgement.evidence(),))
                progress.stage("list", {"port": request.port})
                entries = cam.list_files()
                total = sum(e.size or 0 for e in entries)
                # The download and its stripped copies both sit in the spool.
                Spool(config.spool_dir).check_room(2 * total)
                progress.stage("download", {"files": len(entries), "bytes": total})
                kept: list[pipeline.FileOutcome] = []
                for i, entry in enumerate(entries, 1):
                    try:
                        cam.download(entry, folder)
                    except cam.error as exc:
                        if not cam.kept_back(exc, entry):
                            raise
                        kept.append(pipeline.FileOutcome(entry.relative_path, FileStatus.IGNORED,
                                                         detail=f"the camera does not hand it out: {exc}"))
                    progress.stage("download", {"files_done": i, "files_total": len(entries)})
                log.info("downloaded the camera's files", extra={"files": len(entries), "bytes": total})
            except StageError as exc:
                return pipeline.stopped(exc.reason, exc.detail, message=camera_message(exc.reason))
            except cam.error as exc:
                log.warning("camera could not be read", extra={"port": request.port, "detail": str(exc)})
                return pipeline.stopped(Reason.CARD_UNREADABLE, f"libgphoto2: {exc}",
                                        message=camera_message(Reason.CARD_UNREADABLE))
            except Exception as exc:  # the camera stays untouched; ops get the traceback
                if isinstance(exc, SpoolFull) or getattr(exc, "errno", None) in FULL_ERRNOS:
                    log.error("spool full: camera deferred, nothing deleted; free space on this PC",
                              extra={"reason": Reason.SPOOL_FULL.value, "detail": str(exc)})
                    return pipeline.stopped(Reason.SPOOL_FULL, str(exc), message=camera_message(Reason.SPOOL_FULL))
                log.exception("internal error while reading a camera")
                return pipeline.stopped(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}",
                                        message=camera_message(Reason.INTERNAL_ERROR))
        outcome = pipeline.ingest_card(
            pipeline.IngestRequest(root=folder, department=request.department, mode=request.mode,
                                   expect=request.expect),
            config, progress=progress, resume=resume,
            wiper=camera_wiper(open_camera, info, {e.relative_path: e for e in entries}),
        )
    return _for_camera(outcome, judgement, kept)


def _for_camera(outcome: IngestOutcome, judgement: CameraJudgement,
                kept: Sequence[FileOutcome] = ()) -> IngestOutcome:
    if outcome.outcome is Outcome.ARCHIVED and outcome.wiped:
        n = sum(1 for f in outcome.files if f.status is FileStatus.ARCHIVED)
        message = (f"All {n} file{'s' if n != 1 else ''} are safely in the archive and have been "
                   "deleted from the camera. The camera is ready for the next patient.")
    elif outcome.reason is not None:
        message = camera_message(outcome.reason)
    else:
        message = outcome.message
    return dataclasses.replace(outcome, message=message,
                               files=tuple(sorted(outcome.files + tuple(kept), key=lambda f: f.path)),
                               evidence=(judgement.evidence(),) + outcome.evidence)


# --------------------------------------------------------------------------- what is connected


def list_cameras(ptpip_hosts: Sequence[str] = (), *, probe_timeout_s: float = 1.0) -> list[dict[str, Any]]:
    """Cameras on USB (libgphoto2's autodetection) and the configured PTP/IP cameras.

    ``disk:`` ports (mounted cards that look like cameras) are left out: the
    card path takes those. Each camera is opened briefly for its serial number;
    one that another program holds (an ingest running) shows ``serial: null``.
    """
    gp = _gphoto2()
    found = gp.Camera.autodetect()
    out = []
    for i in range(found.count()):
        driver, port = found.get_name(i), found.get_value(i)
        if port.startswith("disk:"):
            continue
        entry = {"model": driver, "port": port, "serial": None, "manufacturer": None,
                 "device_model": None, "connected": True}
        try:
            with CameraConnection.open(port, driver) as cam:
                info = cam.info()
            entry.update({k: v for k, v in info.to_json().items() if k not in ("port", "model")})
        except CameraNotFound as exc:
            entry["detail"] = str(exc)
        out.append(entry)
    for host in ptpip_hosts:
        out.append({"model": DEFAULT_MODELS["ptpip"], "port": f"ptpip:{host}", "serial": None,
                    "manufacturer": None, "device_model": None,
                    "connected": ptpip_reachable(host, probe_timeout_s)})
    return out


def ptpip_reachable(host: str, timeout_s: float) -> bool:
    """Whether something listens on a PTP/IP camera's port ("HOST" or "HOST:PORT")."""
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or PTPIP_PORT)), timeout=timeout_s):
            return True
    except OSError:
        return False
