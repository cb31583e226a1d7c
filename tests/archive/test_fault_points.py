"""The fault points hook (archive_server/faults.py): inert unless armed, every
listed point is in the code once, and an unknown name is an error (a typo in the
fault suite must not silently test nothing)."""
from __future__ import annotations

import pathlib
import re

import pytest

from archive_server import faults

ROOT = pathlib.Path(faults.__file__).parent


def test_every_point_is_reached_once_in_the_code_and_none_unlisted():
    found: list[str] = []
    for path in ROOT.rglob("*.py"):
        found += re.findall(r'faults\.reach\("([^"]+)"\)', path.read_text())
    assert sorted(found) == sorted(faults.POINTS)


def test_inert_unless_armed(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reach("commit.begin")
    monkeypatch.setenv(faults.ENV, "purge.begin=kill")
    faults.reach("commit.begin")  # another point: nothing happens


def test_wait_holds_until_the_file_exists(monkeypatch, tmp_path):
    go = tmp_path / "go"
    go.touch()
    monkeypatch.setenv(faults.ENV, f"commit.begin=wait:{go}")
    faults.reach("commit.begin")
    assert (tmp_path / "go.reached").exists()


def test_an_unknown_point_is_an_error(monkeypatch):
    monkeypatch.setenv(faults.ENV, "comit.begin=kill")
    with pytest.raises(ValueError, match="unknown fault point 'comit.begin'"):
        faults.reach("commit.begin")
