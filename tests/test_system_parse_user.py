"""Nothing on a card is parsed as root (issue 13): the daemon's layout lets its card
readers become ``bildsluss-parse``.

Root only (losetup, mount, the user switch). The layout is the packaged daemon's
below a temporary folder anyone may enter (not pytest's 0700 tmp): state folder,
spool root and mount root 0711, each card's spool folder 0711 with the parsers'
own folder inside it handed over. The card is a real loop-mounted image: FAT32
(mounted by the daemon with ``gid=<bildsluss-parse>,umask=027``) where the kernel
has vfat; else ext4 (this machine's kernel has no vfat), whose files are given
those very owners and modes (root, the parser's group, 0640/0750) so that the
parser user reads them as it reads a FAT card: by its group, not as "other".

What is proved: the daemon ingests and wipes the card and its reader workers say
(from inside a worker) that they run as ``bildsluss-parse``, with no root fallback
warning, and every exiftool and ffmpeg the daemon runs for the card (the scan's,
the strip stage's, the read-back's) runs as that user; a worker of the same layout reads the card and its own folder, and
cannot read a root-only 0600 file beside the card, the journal's folder, or write
beside its own folder (where the stripped copies lie). The strip stage (issue 13's last item): a card of JPEG, PNG, MP4, WAV and DICOM
is stripped in the reader processes (each copy written by the parser user:
Python's, exiftool's and ffmpeg's), read back by an exiftool running as that
user, taken back into root's own 0600 files, and those are byte for byte what
the strip stage wrote when it ran in root's process; and root refuses a copy it
cannot trust (a symbolic link, a hard link, a FIFO, not the parser's, changed
after the parser checked it), while a parser that writes to its copy after the
take-back changes nothing that is sent. And the honest fallback:
a card the parser user cannot reach (a 0700 folder) is read as root, confined,
with the warning, and the workers say uid 0.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from agent.card import sandbox, workers
from agent.card import metadata
from agent.card.metadata import MetadataReader
from agent.card.model import Mode, StageError
from agent.card.reasons import Reason
from agent.card.strip import strip_all
from agent.card.spool import Spool
from agent.daemon import mount as mount_mod
from tests.support.cardgen import make_card, make_personnummer
from tests.support.daemon import daemons, media_count, states  # noqa: F401 (a fixture)
from tests.support.e2e import cases, media_on
from tests.support.loopcard import CardImage
from tests.support.mediagen import write_video, write_wav
from tests.support.parse_probe import probe

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices, mounts and the user switch"),
    pytest.mark.skipif(not shutil.which("losetup"), reason="needs losetup (util-linux)"),
]

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus"))
FALLBACK = ("the parser user cannot reach the card or the spool; card parsed as root, "
            "confined by Landlock and seccomp only")


def _parser() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(sandbox.PARSER_USER)
    except KeyError:
        pytest.fail(f"the parser user {sandbox.PARSER_USER} is missing (scripts/setup.sh creates it)")


def _fstype() -> str:
    known = pathlib.Path("/proc/filesystems").read_text().split()
    return "vfat" if "vfat" in known and shutil.which("mkfs.vfat") and shutil.which("mcopy") else "ext4"


@pytest.fixture
def place():
    """A folder anyone may enter (0711), as / and /var/lib are for the packaged daemon."""
    base = pathlib.Path(tempfile.mkdtemp(dir="/tmp", prefix="bildsluss-parse-user-"))
    base.chmod(0o711)
    cards: list[CardImage] = []
    yield base, cards
    for card in cards:
        card.close()
    for point in mount_mod.mounts_below(base):
        subprocess.run(["umount", "-l", str(point)], check=False)
    shutil.rmtree(base, ignore_errors=True)


def _card(place, patient: str, seed: int) -> CardImage:
    base, cards = place
    (base / "cards").mkdir(exist_ok=True)
    content = base / f"content{seed}"
    make_card(content, patient=patient, n_images=3, megapixels=0.8, seed=seed)
    card = CardImage(base / "cards", content, size_mib=48, fstype=_fstype(), parser_gid=_parser().pw_gid)
    cards.append(card)
    return card


class ProgramWatch(threading.Thread):
    """The users exiftool and ffmpeg run as among the descendants of ``pid``, seen in
    /proc every few milliseconds while the test runs (a program's own command line:
    the sandbox's wrapper in front of one is Python, and root until it confines itself)."""

    PROGRAMS = {"exiftool", "ffmpeg"}

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.seen, self.done = pid, set(), threading.Event()

    def __enter__(self) -> ProgramWatch:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()

    def run(self) -> None:
        while not self.done.is_set():
            children: dict[int, list[int]] = {}
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        stat = pathlib.Path(entry.path, "stat").read_text()
                    except OSError:
                        continue
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
            todo = list(children.get(self.pid, []))
            while todo:
                pid = todo.pop()
                todo += children.get(pid, [])
                try:
                    argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    uid = _uid_of(pid)
                except (OSError, AssertionError):
                    continue
                for arg in argv[:3]:
                    name = os.path.basename(arg).decode(errors="replace")
                    if name in self.PROGRAMS:
                        self.seen.add((name, uid))
                        break
            time.sleep(0.01)


def test_the_daemon_reads_a_card_as_the_parser_user_and_archives_it(daemons, archive, place):
    patient = make_personnummer("19770101", "882")
    card = _card(place, patient, seed=71)
    base = place[0]
    # A roomy reading budget: this test is about who reads, not how fast (a label
    # region not read within the budget refuses the card on a loaded PC).
    daemon = daemons(base / "d", archive.address, loop_backing_dir=base / "cards",
                     extra_daemon="\n[identity]\nbudget_s = 10.0\n").start()
    try:
        daemon.wait_for_log("daemon ready")
        with ProgramWatch(daemon.proc.pid) as programs:
            card.insert()
            cards = daemon.wait_for("the card to be done",
                                    lambda cs: bool(cs) and cs[0]["state"] in ("done", "refused"))
        started = daemon.wait_for_log("card readers started")
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert states(cards) == ["done"], (cards, daemon.log_tail())
    seen = daemon.log_lines()
    assert started["uid"] == _parser().pw_uid != 0, "the card's readers ran as root"
    # The scan's exiftool and the strip stage's read-back live as long as the card's
    # reading: seen. Every one, and any ffmpeg, as the parser user (issue 13).
    assert ("exiftool", _parser().pw_uid) in programs.seen, programs.seen
    assert {uid for _, uid in programs.seen} == {_parser().pw_uid}, programs.seen
    assert not [line for line in seen if line.get("msg") == FALLBACK], "the daemon fell back to root"
    # The daemon's layout, as the packaged one: enter, not list.
    assert {p: oct(p.stat().st_mode & 0o777) for p in (daemon.state_dir, base / "d" / "spool",
                                                       daemon.mount_root)} == {
        daemon.state_dir: "0o711", base / "d" / "spool": "0o711", daemon.mount_root: "0o711"}
    assert oct((daemon.state_dir / "journal.sqlite3").stat().st_mode & 0o777) == "0o600"
    if card.fstype == "vfat":
        mounted = [line for line in seen if line.get("msg") == "card mounted"]
        assert mounted and mounted[0]["fstype"] == "vfat"
    (case,) = cases(archive, patient.replace("-", ""))
    assert media_count(case) == 3


def _uid_of(pid: int | None) -> int:
    assert pid is not None, "no exiftool running"
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture(params=["as started", "beside a thread"])
def workers_start(request):
    """The CLI's readers are forked; the daemon's (a process with threads) come from
    a fork server and import what they are given after they are confined."""
    if request.param == "as started":
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def test_a_reader_worker_and_the_card_s_exiftool_read_the_card_and_nothing_root_only_beside_it(
        place, workers_start):
    base = place[0]
    card = _card(place, make_personnummer("19730606", "231"), seed=122)
    volume = mount_mod.probe(card.insert())
    assert volume is not None
    state = base / "state"
    mount_root = base / "run" / "cards"
    point = mount_mod.mount(volume, mount_root, (card.fstype,))
    secret = mount_root / "root-only"
    secret.write_text("root's")
    secret.chmod(0o600)
    world = mount_root / "notes"
    world.write_text("anyone's, but not the card's")
    world.chmod(0o644)
    state.mkdir(mode=0o711)
    journal = state / "journal.sqlite3"
    journal.write_text("numbers")
    journal.chmod(0o600)
    parser = _parser()
    try:
        with Spool(state / "spool").session("s1") as spool_dir, \
                workers.CardReaders(point, spool_dir, Mode.PHOTO, budget_s=2.0, workers=1) as readers:
            assert readers.confinement is not None and readers.confinement.uid == parser.pw_uid
            exiftool_uids: set[int] = set()
            readers.on_probed = lambda done, total: exiftool_uids.add(_uid_of(readers._card_metadata.pid))
            with MetadataReader() as pipelines_own:  # root's, for the stripped copies only
                scanned = readers.scan(point, reader=pipelines_own)
                assert _uid_of(pipelines_own.pid) == 0
            # exiftool reading the card, confined as the workers are (issue 13).
            with MetadataReader(confinement=readers.confinement) as confined:
                read = confined.read([point / "DCIM" / "100CANON" / "IMG_0001.JPG", secret])
                # Asked once it has answered: its start no longer waits for exiftool, and
                # until the sandbox wrapper has switched user the process is still root's.
                assert _uid_of(confined.pid) == parser.pw_uid
            # A test's own probe, in the same worker pool the card was read in.
            seen = readers._result(readers._submit(probe, {
                "card": str(point), "secret": str(secret), "open": str(world), "state": str(state),
                "journal": str(journal), "scratch": str(spool_dir / "parse"), "spool": str(spool_dir)}), "probe")
            assert readers.worker_uid == parser.pw_uid
            stat_spool, stat_scratch = spool_dir.stat(), (spool_dir / "parse").stat()
    finally:
        mount_mod.unmount(point)
    assert len(scanned.media) == 3, "the parser user reads the card's files (its group)"
    assert exiftool_uids == {parser.pw_uid}, "the card's exiftool ran as the parser user"
    card_meta, secret_meta = read.values()
    assert "ExifTool:Error" not in card_meta and metadata.file_type(card_meta) == "JPEG", card_meta
    assert "ExifTool:Error" in secret_meta, "exiftool read a root-only file beside the card"
    assert seen["uid"] == parser.pw_uid and seen["groups"] == []
    assert seen["read card"] == seen["write its folder"] == "ok", seen
    assert seen["write card"] == "PermissionError", seen
    assert seen["read beside the card"] == seen["read world-readable beside the card"] == "PermissionError", seen
    assert seen["list the state folder"] == seen["read the journal"] == "PermissionError", seen
    assert seen["write beside its folder"] == seen["list the spool folder"] == "PermissionError", seen
    # Root's folder (the stripped copies), the parser's own folder inside it.
    assert (stat_spool.st_uid, oct(stat_spool.st_mode & 0o777)) == (0, "0o711")
    assert (stat_scratch.st_uid, oct(stat_scratch.st_mode & 0o777)) == (parser.pw_uid, "0o700")


def test_a_card_the_parser_user_cannot_reach_is_read_as_root_confined_and_said_so(tmp_path, caplog):
    """pytest's tmp folder is root's 0700: the honest fallback, never a silent one."""
    card = tmp_path / "card"
    make_card(card, patient=make_personnummer("19740707", "239"), n_images=3, megapixels=0.8, seed=123)
    (tmp_path / "spool").mkdir()
    with caplog.at_level(logging.INFO, logger="agent.card.workers"), \
            workers.CardReaders(card, tmp_path / "spool", Mode.PHOTO, budget_s=2.0, workers=1) as readers:
        scanned = readers.scan(card)
    assert len(scanned.media) == 3 and media_on(card)
    assert readers.confinement is not None and readers.confinement.uid is None
    assert readers.worker_uid == 0
    assert FALLBACK in [r.getMessage() for r in caplog.records]


# -- the strip stage -------------------------------------------------------------------------


def _mixed_card(place, seed: int) -> CardImage:
    """JPEG, PNG and DICOM from the shared corpus, a camera's MP4 and a dictaphone's
    WAV (written with ffmpeg and Python: the corpus holds neither), on a loop card."""
    base, cards = place
    (base / "cards").mkdir(exist_ok=True)
    content = base / f"content{seed}"
    folder = content / "DCIM" / "100CANON"
    folder.mkdir(parents=True)
    shutil.copyfile(CORPUS / "exif" / "Canon.jpg", folder / "IMG_0001.JPG")
    shutil.copyfile(CORPUS / "exif" / "GPS.jpg", folder / "IMG_0002.JPG")
    shutil.copyfile(CORPUS / "exif" / "PNG.png", folder / "IMG_0003.PNG")
    write_video(folder / "MVI_0004.MP4", first=None, last=None, seconds=2.0, size=(320, 240), seed=seed)
    write_wav(content / "VOICE" / "REC0005.WAV", seconds=1.0, info={"INAM": "Anna Andersson"})
    (content / "DICOM").mkdir()
    shutil.copyfile(CORPUS / "dicom" / "ultrasound" / "OBXXXX1A_rle.dcm", content / "DICOM" / "US0006.DCM")
    card = CardImage(base / "cards", content, size_mib=48, fstype=_fstype(), parser_gid=_parser().pw_gid)
    cards.append(card)
    return card


@pytest.fixture
def mounted(place):
    """A mounted mixed card, in the daemon's layout (see the module notes)."""
    base = place[0]
    card = _mixed_card(place, seed=131)
    volume = mount_mod.probe(card.insert())
    assert volume is not None
    point = mount_mod.mount(volume, base / "run" / "cards", (card.fstype,))
    state = base / "state"
    state.mkdir(mode=0o711)
    try:
        yield point, Spool(state / "spool")
    finally:
        mount_mod.unmount(point)


def test_the_strip_stage_parses_as_the_parser_user_and_sends_what_root_hashed(mounted):
    point, spool = mounted
    parser = _parser()
    owners: dict[str, int] = {}
    with spool.session("confined") as spool_dir, \
            workers.CardReaders(point, spool_dir, Mode.PHOTO, budget_s=2.0, workers=2) as readers, \
            MetadataReader(confinement=readers.readback_confinement) as reader, \
            ProgramWatch(os.getpid()) as programs:
        assert readers.confinement is not None and readers.confinement.uid == parser.pw_uid
        scanned = readers.scan(point, reader=reader)
        assert sorted(m.media_type for m in scanned.media) == [
            "application/dicom", "audio/wav", "image/jpeg", "image/jpeg", "image/png", "video/mp4"], scanned
        take_back = readers._take_back

        class Observed:  # who wrote the copy root takes back: the kernel says
            close = take_back.close

            def __call__(self, written, media):
                owners[media.media_type] = os.lstat(written.out).st_uid
                return take_back(written, media)

        readers._take_back = Observed()
        stripped = strip_all(scanned.media, spool_dir, tool=reader, parsers=readers)
        reader_uid = _uid_of(reader.pid)
        left_by_parser = sorted(p.name for p in (spool_dir / "parse").iterdir())
        copies = {s.source.relative_path: (s.sha256, s.size, s.spool_path.read_bytes(), s.spool_path.stat())
                  for s in stripped}
    # The same card stripped the way it was before (in this, root's, process).
    with spool.session("in-process") as own_dir:
        before = {s.source.relative_path: (s.sha256, s.size) for s in strip_all(scanned.media, own_dir)}
    assert set(owners) == {m.media_type for m in scanned.media}
    assert set(owners.values()) == {parser.pw_uid}, owners  # Python's, exiftool's (PNG), ffmpeg's (MP4)
    assert reader_uid == parser.pw_uid, "the read-back's exiftool ran as root"
    assert ("exiftool", parser.pw_uid) in programs.seen and ("ffmpeg", parser.pw_uid) in programs.seen, \
        programs.seen
    assert {uid for _, uid in programs.seen} == {parser.pw_uid}, programs.seen
    assert left_by_parser == [], "the parser's copies are removed once taken back"
    for path, (sha, size, data, st) in copies.items():
        assert hashlib.sha256(data).hexdigest() == sha and len(data) == size, path
        assert (st.st_uid, oct(st.st_mode & 0o777), st.st_nlink) == (0, "0o600", 1), path
    assert {path: (sha, size) for path, (sha, size, _, _) in copies.items()} == before


def _tamper(how: str, copy: pathlib.Path, parser: pwd.struct_passwd, secret: pathlib.Path):
    """Do to the parser's copy what a parser that is not to be trusted could."""
    if how == "symbolic link":
        copy.unlink()
        copy.symlink_to(secret)
        os.lchown(copy, parser.pw_uid, parser.pw_gid)
    elif how == "hard link":
        os.link(copy, copy.with_name("kept"))
    elif how == "FIFO":
        copy.unlink()
        os.mkfifo(copy)
        os.chown(copy, parser.pw_uid, parser.pw_gid)
    elif how == "not the parser's":
        os.chown(copy, 0, 0)
    elif how == "changed after the check":
        with open(copy, "r+b") as fh:
            fh.seek(-3, os.SEEK_END)
            fh.write(b"\x00\x00\x00")


def test_root_refuses_a_copy_it_cannot_trust_and_sends_only_what_it_hashed(mounted):
    point, spool = mounted
    parser = _parser()
    secret = point.parent.parent / "root-secret"
    secret.write_bytes(b"root's only")
    secret.chmod(0o600)
    ways = ["symbolic link", "hard link", "FIFO", "not the parser's", "changed after the check"]
    refused: dict[str, str] = {}
    with spool.session("tampered") as spool_dir, \
            workers.CardReaders(point, spool_dir, Mode.PHOTO, budget_s=2.0, workers=1) as readers:
        jpeg = next(m for m in readers.scan(point).media if m.relative_path.endswith("IMG_0001.JPG"))
        for how in ways:
            future = readers.strip_later(jpeg)
            written = future.result()
            assert written.out.parent == spool_dir / "parse" and os.stat(written.out).st_uid == parser.pw_uid
            _tamper(how, written.out, parser, secret)
            with pytest.raises(StageError) as caught:
                readers.take_back(future, jpeg)
            refused[how] = f"{caught.value.reason.value}: {caught.value.detail}"
            assert caught.value.reason is Reason.STRIP_FAILED
            assert sorted(p.name for p in spool_dir.iterdir()) == ["parse"], "a refused copy left in the spool"
        # A parser that keeps its copy open and writes to it after the take-back
        # changes its own file only: root's copy, and its hash, are what it read.
        future = readers.strip_later(jpeg)
        written = future.result()
        with open(written.out, "r+b") as kept:
            taken = readers.take_back(future, jpeg)
            kept.seek(0)
            kept.write(b"\x00" * 64)
        data = taken.out.read_bytes()
        st = taken.out.stat()
    assert "symbolic link" in refused["symbolic link"], refused
    assert "2 links" in refused["hard link"], refused
    assert "not a regular file" in refused["FIFO"], refused
    assert "owned by uid 0" in refused["not the parser's"], refused
    assert "changed after it was checked" in refused["changed after the check"], refused
    assert hashlib.sha256(data).hexdigest() == taken.sha256 == written.sha256 and data.startswith(b"\xff\xd8")
    assert taken.out.parent == spool_dir and st.st_uid == 0 and not os.path.exists(written.out)
