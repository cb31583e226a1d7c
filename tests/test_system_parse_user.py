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
warning; a worker of the same layout reads the card and its own folder, and
cannot read a root-only 0600 file beside the card, the journal's folder, or write
beside its own folder (where the stripped copies lie). And the honest fallback:
a card the parser user cannot reach (a 0700 folder) is read as root, confined,
with the warning, and the workers say uid 0.
"""
from __future__ import annotations

import logging
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import threading

import pytest

from agent.card import sandbox, workers
from agent.card import metadata
from agent.card.metadata import MetadataReader
from agent.card.model import Mode
from agent.card.spool import Spool
from agent.daemon import mount as mount_mod
from tests.support.cardgen import make_card, make_personnummer
from tests.support.daemon import daemons, media_count, states  # noqa: F401 (a fixture)
from tests.support.e2e import cases, media_on
from tests.support.loopcard import CardImage
from tests.support.parse_probe import probe

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices, mounts and the user switch"),
    pytest.mark.skipif(not shutil.which("losetup"), reason="needs losetup (util-linux)"),
]

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
        card.insert()
        cards = daemon.wait_for("the card to be done", lambda cs: bool(cs) and cs[0]["state"] in ("done", "refused"))
        started = daemon.wait_for_log("card readers started")
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert states(cards) == ["done"], (cards, daemon.log_tail())
    seen = daemon.log_lines()
    assert started["uid"] == _parser().pw_uid != 0, "the card's readers ran as root"
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
                assert _uid_of(confined.pid) == parser.pw_uid
                read = confined.read([point / "DCIM" / "100CANON" / "IMG_0001.JPG", secret])
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
