"""wipe: deletes exactly the archived media, and nothing if the card changed."""
import hashlib
import os
import pathlib
import subprocess

import pytest

from agent.model import MediaFile, MediaKind, StageError
from agent.reasons import Reason
from agent.wipe import wipe


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


def test_unlink_failure_is_reported_not_raised(tmp_path):
    """A card that turns read-only after the check: deletions fail, are reported."""
    root, media = _card(tmp_path)
    folder = media[0].path.parent
    if os.geteuid() == 0:
        # Root ignores permission bits: make the folder a read-only bind mount.
        subprocess.run(["mount", "--bind", folder, folder], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
            result = wipe(root, media)
        finally:
            subprocess.run(["umount", folder], check=True)
    else:
        folder.chmod(0o500)
        try:
            result = wipe(root, media)
        finally:
            folder.chmod(0o700)
    assert not result.complete
    assert sorted(path for path, _ in result.failed) == sorted(m.relative_path for m in media)
    assert all(m.path.exists() for m in media)
