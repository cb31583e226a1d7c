"""archive_server.decoding: stored media are decoded in worker processes that a
crash, a memory bomb or an endless decode cannot take the archive down with,
and that write no file; the next picture still comes."""
from __future__ import annotations

import io
import os
import pathlib
import resource
import signal
import time

import pytest
from PIL import Image

from archive_server import decoding, previews

CORPUS = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
CANON = CORPUS / "exif" / "Canon.jpg"


# The decodes the workers are given: module-level, so that a worker can import them.
def _crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _endless() -> None:
    while True:
        time.sleep(0.05)


def _allocate(size: int) -> int:
    return len(bytearray(size))


def _write(path: str) -> None:
    with open(path, "wb") as fh:
        fh.write(b"x" * 4096)


def _limits() -> tuple[tuple[int, int], tuple[int, int]]:
    return resource.getrlimit(resource.RLIMIT_DATA), resource.getrlimit(resource.RLIMIT_FSIZE)


def _thumb_still_works() -> None:
    body, content_type = previews.made_apart(CANON.read_bytes(), "image", "thumb")
    assert content_type == "image/jpeg"
    with Image.open(io.BytesIO(body)) as img:
        assert max(img.size) <= previews.THUMB_PX and not img.getexif()


@pytest.fixture(autouse=True)
def fresh_pool():
    yield
    decoding.stop()


def test_a_picture_is_decoded_in_another_process_with_its_memory_bounded_and_no_file_writes():
    assert decoding.run(os.getpid) != os.getpid()
    data, fsize = decoding.run(_limits)
    assert data == (decoding.MEMORY_BYTES, decoding.MEMORY_BYTES) and fsize == (0, 0)
    _thumb_still_works()


def test_a_decoder_that_crashes_is_refused_and_the_next_picture_comes():
    with pytest.raises(decoding.Undecodable, match="stopped"):
        decoding.run(_crash)
    _thumb_still_works()


def test_an_endless_decode_is_stopped_and_the_next_picture_comes():
    started = time.monotonic()
    with pytest.raises(decoding.Undecodable, match="too long"):
        decoding.run(_endless, timeout_s=1.0)
    assert time.monotonic() - started < 30  # stopped, not waited out
    _thumb_still_works()


def test_a_decode_that_takes_more_memory_than_allowed_is_refused():
    assert decoding.run(_allocate, 64 << 20) == 64 << 20
    with pytest.raises(decoding.Undecodable, match="memory"):
        decoding.run(_allocate, decoding.MEMORY_BYTES + (256 << 20))
    _thumb_still_works()


def test_a_decoder_cannot_write_a_file(tmp_path):
    target = tmp_path / "written-by-a-decoder"
    with pytest.raises((decoding.Undecodable, OSError)):
        decoding.run(_write, str(target))
    assert not target.exists() or target.stat().st_size == 0


def test_a_crash_while_making_a_preview_is_no_preview_for_the_page(monkeypatch):
    run = decoding.run

    def crashing(decode, *args, **kwargs):
        return run(_crash)

    monkeypatch.setattr(decoding, "run", crashing)
    with pytest.raises(previews.NoPreview) as refused:
        previews.made_apart(CANON.read_bytes(), "image", "thumb")
    assert refused.value.reason == "NO_PREVIEW" and "picture" in str(refused.value)
    assert "download" in str(refused.value)
