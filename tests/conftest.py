"""Fixtures shared across the test suite."""
from __future__ import annotations

import os

import pytest

from tests.support.archive_process import ArchiveProcess
from tests.support.seaweedfs import SeaweedFS


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A real archive process (SQLite + blob folder) shared by a test module."""
    with ArchiveProcess(data=tmp_path_factory.mktemp("e2e") / "archive") as proc:
        yield proc


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real S3 server (SeaweedFS) for the session, its endpoint and
    credentials in the standard AWS_* variables while it runs. Missing or
    broken, it FAILS the tests that need it (CI must go red), unless
    BILDSLUSS_SKIP_S3=1 is set, which skips them."""
    if os.environ.get("BILDSLUSS_SKIP_S3") == "1":
        pytest.skip("BILDSLUSS_SKIP_S3=1")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(f"{e}\nset BILDSLUSS_SKIP_S3=1 to skip the S3 tests", pytrace=False)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
