"""Fixtures shared across the test suite."""
from __future__ import annotations

import pytest

from tests.support.archive_process import ArchiveProcess


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A real archive process (SQLite + blob folder) shared by a test module."""
    with ArchiveProcess(data=tmp_path_factory.mktemp("e2e") / "archive") as proc:
        yield proc
