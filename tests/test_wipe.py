"""wipe: deletes exactly the archived media, and nothing if the card changed."""
import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from agent.card.model import MediaFile, MediaKind, StageError
from agent.card.reasons import Reason
from agent.card.wipe import CardTree, check_media, delete_checked, wipe


def _card(tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[MediaFile]]:
    root = tmp_path / "card"
    folder = root / "DCIM" / "100CANON"
    folder.mkdir(parents=True)
    (root / "MISC").mkdir()
    (root / "MISC" / "AUTPRINT.MRK").write_text("[HDR]\n")
    media = []
    for i in (1, 2):
        path = folder / f"IMG_000{i}.JPG"
        data = os.urandom(5000)
        path.write_bytes(data)
        st = path.stat()
        media.append(MediaFile(
            path=path, relative_path=str(path.relative_to(root)), kind=MediaKind.IMAGE,
            media_type="image/jpeg", size=st.st_size, sha256=hashlib.sha256(data).hexdigest(),
            mtime_ns=st.st_mtime_ns,
        ))
    return root, media


def _tree(root: pathlib.Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_wipe_deletes_media_only(tmp_path):
    root, media = _card(tmp_path)
    result = wipe(root, media)
    assert result.complete
    assert sorted(result.deleted) == sorted(m.relative_path for m in media)
    assert _tree(root) == {
        "DCIM": None, "DCIM/100CANON": None, "MISC": None, "MISC/AUTPRINT.MRK": b"[HDR]\n",
    }


def test_changed_content_same_size_and_mtime_deletes_nothing(tmp_path):
    root, media = _card(tmp_path)
    victim = media[1].path
    st = victim.stat()
    victim.write_bytes(os.urandom(st.st_size))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = _tree(root)
    with pytest.raises(StageError) as err:
        wipe(root, media)
    assert err.value.reason == Reason.CARD_CHANGED
    assert "content changed" in err.value.detail
    assert _tree(root) == before


def test_replaced_by_symlink_deletes_nothing(tmp_path):
    root, media = _card(tmp_path)
    target = tmp_path / "elsewhere.jpg"
    target.write_bytes(media[0].path.read_bytes())
    media[0].path.unlink()
    media[0].path.symlink_to(target)
    with pytest.raises(StageError) as err:
        wipe(root, media)
    assert err.value.reason == Reason.CARD_CHANGED
    assert media[1].path.exists() and target.exists()


def test_all_files_gone_is_card_removed(tmp_path):
    root, media = _card(tmp_path)
    for m in media:
        m.path.unlink()
    with pytest.raises(StageError) as err:
        wipe(root, media)
    assert err.value.reason == Reason.CARD_REMOVED


def test_card_gone_is_card_removed(tmp_path):
    root, media = _card(tmp_path)
    root.rename(tmp_path / "pulled")
    with pytest.raises(StageError) as err:
        wipe(root, media)
    assert err.value.reason == Reason.CARD_REMOVED


@contextlib.contextmanager
def _read_only(folder: pathlib.Path) -> Iterator[None]:
    """The folder as a read-only bind mount (root ignores permission bits)."""
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
        yield
    finally:
        subprocess.run(["umount", folder], check=True)


def test_unlink_failure_is_reported_not_raised(tmp_path):
    """A card that turns read-only after the check: deletions fail, are reported."""
    root, media = _card(tmp_path)
    folder = media[0].path.parent
    if os.geteuid() == 0:
        # Root ignores permission bits: make the folder a read-only bind mount.
        with _read_only(folder):
            result = wipe(root, media)
    else:
        folder.chmod(0o500)
        try:
            result = wipe(root, media)
        finally:
            folder.chmod(0o700)
    assert not result.complete
    assert sorted(path for path, _ in result.failed) == sorted(m.relative_path for m in media)
    assert all(m.path.exists() for m in media)


# --- housekeeping that belongs to the wiped media (R10) -----------------------------------


def _media(root: pathlib.Path, rel: str, data: bytes, kind: MediaKind = MediaKind.IMAGE) -> MediaFile:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return MediaFile(path=path, relative_path=rel, kind=kind, media_type="video/mp4",
                     size=st.st_size, sha256=hashlib.sha256(data).hexdigest(), mtime_ns=st.st_mtime_ns)


CAMERA_DATABASES = {  # camera and OS indexes that hold no pictures: they stay
    "MISC/AUTPRINT.MRK": b"[HDR]\n",
    "DCIM/CANONMSC/M0100.CTG": b"\x00" * 32,
    "NC_FLLST.DAT": b"\x00" * 16,
    "PRIVATE/SONY/AVF_INFO/AVIN0001.BNP": b"\x00" * 16,
    "DCIM/100CANON/MVI_0009.THM": b"\xff\xd8 a thumbnail of a clip not on this card",
}


def test_sidecars_and_thumbnail_caches_go_with_their_media(tmp_path):
    root = tmp_path / "card"
    media = [_media(root, "DCIM/100CANON/MVI_0001.MP4", os.urandom(3000), MediaKind.VIDEO),
             _media(root, "DCIM/100CANON/IMG_0002.JPG", os.urandom(3000))]
    belongs = {"DCIM/100CANON/MVI_0001.THM": b"\xff\xd8thumb", "DCIM/100CANON/mvi_0001.lrv": b"proxy",
               "DCIM/100CANON/._IMG_0002.JPG": b"\x00\x05\x16\x07", "DCIM/100CANON/Thumbs.db": b"\xd0\xcf",
               "DCIM/100CANON/.DS_Store": b"\x00\x00\x00\x01Bud1"}
    for rel, data in {**belongs, **CAMERA_DATABASES}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    result = wipe(root, media)

    assert result.complete and sorted(result.housekeeping) == sorted(belongs)
    assert {k: v for k, v in _tree(root).items() if v is not None} == CAMERA_DATABASES


def test_nothing_of_it_goes_when_the_media_stays(tmp_path):
    """A media file that cannot be deleted keeps its sidecar and its folder's caches."""
    root = tmp_path / "card"
    media = [_media(root, "DCIM/100CANON/MVI_0001.MP4", os.urandom(3000), MediaKind.VIDEO)]
    for rel in ("DCIM/100CANON/MVI_0001.THM", "DCIM/100CANON/Thumbs.db"):
        (root / rel).write_bytes(b"\xff\xd8thumb")
    folder = root / "DCIM/100CANON"
    with _read_only(folder):
        result = wipe(root, media)
    assert [p for p, _ in result.failed] == ["DCIM/100CANON/MVI_0001.MP4"]
    assert result.housekeeping == ()
    assert sorted(p.name for p in folder.iterdir()) == ["MVI_0001.MP4", "MVI_0001.THM", "Thumbs.db"]


def _dicom_card(tmp_path: pathlib.Path, n: int) -> tuple[pathlib.Path, list[MediaFile]]:
    from PIL import Image

    from tests.support.mediagen import write_dicomdir_card, write_us_dicom

    src = [write_us_dicom(tmp_path / f"src{i}.dcm", [Image.new("RGB", (64, 48), (i * 40, 90, 120))],
                          "198204152386", name="ERIKSSON^ERIK", instance=i + 1) for i in range(n)]
    root = tmp_path / "card"
    refs = write_dicomdir_card(root, src)
    return root, [MediaFile(path=root / r, relative_path=r, kind=MediaKind.DICOM,
                            media_type="application/dicom", size=(root / r).stat().st_size,
                            sha256=hashlib.sha256((root / r).read_bytes()).hexdigest(),
                            mtime_ns=(root / r).stat().st_mtime_ns) for r in refs]


def test_dicomdir_goes_after_every_file_it_indexes_was_wiped(tmp_path):
    root, media = _dicom_card(tmp_path, 2)
    assert b"ERIKSSON" in (root / "DICOMDIR").read_bytes()
    result = wipe(root, media)
    assert result.complete and result.housekeeping == ("DICOMDIR",)
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_dicomdir_stays_while_it_indexes_a_file_that_stays(tmp_path):
    root, media = _dicom_card(tmp_path, 2)
    result = wipe(root, media[:1])  # the other image was not archived (not ours to delete)
    assert result.complete and result.housekeeping == ()
    assert (root / "DICOMDIR").exists() and media[1].path.exists()


def test_unreadable_dicomdir_is_reported_not_silently_left(tmp_path):
    root, media = _dicom_card(tmp_path, 1)
    (root / "DICOMDIR").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    result = wipe(root, media)
    assert result.deleted == (media[0].relative_path,)
    assert not result.complete and result.failed[0][0] == "DICOMDIR"
    assert "may still name the patient" in result.failed[0][1]
    assert (root / "DICOMDIR").exists()


def test_the_hash_is_read_from_the_card_not_the_page_cache(tmp_path):
    """A file whose bytes change under a mounted file system (here: the loop
    device's backing image is written directly) while its old pages sit in the
    page cache: only a read that drops the cached pages sees the change."""
    if shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs losetup and mkfs.ext4")
    image = tmp_path / "card.img"
    image.write_bytes(b"\x00" * (8 << 20))
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        marker = os.urandom(4096)
        m = _media(mnt, "DCIM/100CANON/IMG_0001.JPG", marker)
        os.sync()
        with open(m.path, "rb") as fh:  # the old bytes are in the page cache
            assert fh.read() == marker
        raw = image.read_bytes()
        at = raw.index(marker)
        with open(image, "r+b") as fh:  # the "card" changes underneath
            fh.seek(at)
            fh.write(os.urandom(4096))
            fh.flush()
            os.fsync(fh.fileno())
        with open(m.path, "rb") as fh:
            assert fh.read() == marker, "precondition: a plain read still sees the cached bytes"
        with pytest.raises(StageError) as err:
            wipe(mnt, [m])
        assert err.value.reason == Reason.CARD_CHANGED and "content changed" in err.value.detail
        assert m.path.exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- the card is hostile: folders swapped for symlinks (issue 13) ----------------------------


def _copies_outside(tmp_path: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    """Byte-identical copies of the card's DCIM folder outside the card, same
    sizes and modification times: what a swapped-in symlink would point at."""
    outside = tmp_path / "outside" / "DCIM"
    shutil.copytree(root / "DCIM", outside, copy_function=shutil.copy2)
    return outside


def test_a_folder_that_is_a_symlink_to_identical_copies_deletes_nothing(tmp_path):
    """The check used to follow a symlinked folder: copies outside the card passed it
    and were deleted, and the card was reported wiped."""
    root, media = _card(tmp_path)
    outside = _copies_outside(tmp_path, root)
    os.rename(root / "DCIM", root / "DCIM.real")
    os.symlink(outside, root / "DCIM")
    with pytest.raises(StageError) as err:
        wipe(root, media)
    assert err.value.reason == Reason.CARD_CHANGED and "folder" in err.value.detail
    assert sorted(p.name for p in (outside / "100CANON").iterdir()) == ["IMG_0001.JPG", "IMG_0002.JPG"]
    assert len(list((root / "DCIM.real" / "100CANON").iterdir())) == 2


def test_a_folder_swapped_for_a_symlink_after_the_check_cannot_redirect_the_wipe(tmp_path):
    """The race, made deterministic: the check passes on the real folder, then the
    folder is renamed away and a symlink to identical copies outside takes its
    place before the deletion. The deletion goes through the folder descriptors the
    check held: it deletes the checked files (now under their new folder name), and
    nothing outside the card."""
    root, media = _card(tmp_path)
    outside = _copies_outside(tmp_path, root)
    before_outside = _tree(outside)
    with CardTree(root) as tree:
        checked = check_media(tree, media)
        os.rename(root / "DCIM", root / "DCIM.real")
        os.symlink(outside, root / "DCIM")
        result = delete_checked(tree, media, checked)
    assert _tree(outside) == before_outside, "a file outside the card was deleted"
    assert sorted(result.deleted) == sorted(m.relative_path for m in media) and result.complete
    assert list((root / "DCIM.real" / "100CANON").iterdir()) == []


def test_a_file_replaced_after_the_check_is_not_deleted(tmp_path):
    """Another file put in a checked file's place (not what the archive holds) stays."""
    root, media = _card(tmp_path)
    with CardTree(root) as tree:
        checked = check_media(tree, media)
        stranger = os.urandom(100)
        media[0].path.unlink()
        media[0].path.write_bytes(stranger)
        result = delete_checked(tree, media, checked)
    assert [p for p, _ in result.failed] == [media[0].relative_path]
    assert media[0].path.read_bytes() == stranger and not media[1].path.exists()


def test_housekeeping_does_not_follow_a_symlinked_folder(tmp_path):
    """A thumbnail cache beside a wiped file is removed only on the card itself."""
    root = tmp_path / "card"
    media = [_media(root, "DCIM/100CANON/MVI_0001.MP4", os.urandom(3000), MediaKind.VIDEO)]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "MVI_0001.THM").write_bytes(b"not the card's")
    (root / "DCIM" / "100CANON" / "MVI_0001.THM").symlink_to(outside / "MVI_0001.THM")
    result = wipe(root, media)
    assert result.complete and result.housekeeping == ()
    assert (outside / "MVI_0001.THM").read_bytes() == b"not the card's"
