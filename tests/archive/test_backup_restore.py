"""Backup and restore as docs/operations.md tells it (issue 14): the database
first (pg_dump, or SQLite's online backup), then the blob store (a copy of the
bucket's prefix, or of the folder); restored into a fresh database and a fresh
bucket or folder, fsck finds every blob and the audit chain is intact."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.archive.databases import PG_URL
from tests.archive.world import World, run_cli

pytestmark = pytest.mark.slow  # ~5 s per backend


def libpq(url: str, database: str | None = None) -> str:
    """The SQLAlchemy URL as pg_dump and pg_restore take it."""
    u = make_url(url).set(drivername="postgresql", query={})
    if database:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def copy_prefix(client, bucket: str, prefix: str, to_bucket: str, to_prefix: str) -> int:
    """What `aws s3 sync s3://BUCKET/PREFIX s3://TO/PREFIX` does."""
    copied = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            key = to_prefix + o["Key"][len(prefix):]
            client.copy({"Bucket": bucket, "Key": o["Key"]}, to_bucket, key)
            copied += 1
    return copied


def test_backup_and_restore_into_a_fresh_database_and_store(fresh_db_url, fresh_blobs_url, db_backend,
                                                             tmp_path, request):
    world = World.create(fresh_db_url, tmp_path / "live", fresh_blobs_url)
    cases = [world.ingest() for _ in range(3)]
    run_cli(["--db", world.db.url, "--blobs", world.blobs.url], "case", "show", cases[0], "--json", "--as",
            "nobody", ok=False)  # an audited refusal, too
    world.close()
    expected_blobs = 6
    backup = tmp_path / "backup"
    backup.mkdir()

    if db_backend == "sqlite":
        # 1. The database, online: `sqlite3 archive.sqlite3 ".backup backup.sqlite3"`.
        live = sqlite3.connect(make_url(fresh_db_url).database)
        copy = sqlite3.connect(backup / "archive.sqlite3")
        live.backup(copy)
        copy.close()
        live.close()
        # 2. The store, after the database: every blob the copy names is there.
        shutil.copytree(world.blobs.root, backup / "blobs")
        # Disaster; restore into a fresh place.
        restored_dir = tmp_path / "restored"
        restored_dir.mkdir()
        shutil.copy(backup / "archive.sqlite3", restored_dir / "archive.sqlite3")
        shutil.copytree(backup / "blobs", restored_dir / "blobs")
        db_url, blobs_url = f"sqlite:///{restored_dir / 'archive.sqlite3'}", str(restored_dir / "blobs")
        cleanup = None
    else:
        s3 = request.getfixturevalue("s3_server")
        schema = str(make_url(fresh_db_url).query["options"]).split("search_path=")[1]
        subprocess.run(["pg_dump", "--format=custom", "--no-owner", f"--schema={schema}",
                        f"--file={backup / 'archive.dump'}", libpq(fresh_db_url)], check=True)
        live_bucket, live_prefix = world.blobs.bucket, world.blobs.prefix
        backup_bucket = s3.create_bucket(f"backup-{uuid.uuid4().hex[:8]}")
        assert copy_prefix(s3.client(), live_bucket, live_prefix, backup_bucket, "archive") == expected_blobs
        # Disaster; restore into a fresh database and a fresh bucket.
        fresh = f"restored_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{fresh}"')
        subprocess.run(["pg_restore", "--no-owner", f"--dbname={libpq(fresh_db_url, fresh)}",
                        str(backup / "archive.dump")], check=True)
        restored_bucket = s3.create_bucket(f"restored-{uuid.uuid4().hex[:8]}")
        copy_prefix(s3.client(), backup_bucket, "archive", restored_bucket, "archive")
        db_url = make_url(fresh_db_url).set(database=fresh).render_as_string(hide_password=False)
        blobs_url = f"s3://{restored_bucket}/archive"

        def cleanup() -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
            admin.dispose()

    try:
        store = ["--db", db_url, "--blobs", blobs_url, "--data", str(tmp_path / "restored-data")]
        fsck = run_cli(store, "fsck", "--json")
        report = json.loads(fsck.stdout)
        assert report["clean"] and report["blobs_in_database"] == expected_blobs, report
        assert report["objects_in_store"] == expected_blobs
        assert "audit chain intact" in run_cli(store, "audit", "verify").stdout
        listed = [json.loads(line) for line in run_cli(store, "cases", "--json").stdout.splitlines()]
        assert sorted(c["case_id"] for c in listed) == sorted(cases)
        run_cli(store, "export", cases[1], str(tmp_path / "out"))
        assert len(list((tmp_path / "out").rglob("*.JPG"))) == 2
    finally:
        if cleanup:
            cleanup()
