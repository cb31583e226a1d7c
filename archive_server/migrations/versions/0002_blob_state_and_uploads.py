"""Blobs: a purge tombstone (``blobs.state``) and multipart uploads in progress
(``blob_uploads``) for the S3 blob store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("state", sa.String(length=16), server_default="stored", nullable=False))
    op.create_table(
        "blob_uploads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.String(length=1024), nullable=False),
        sa.Column("part_size", sa.BigInteger(), nullable=False),
        sa.Column("part_count", sa.Integer(), nullable=False),
        sa.Column("etags", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("touched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "sha256"),
    )
    op.create_index(op.f("ix_blob_uploads_touched_at"), "blob_uploads", ["touched_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_blob_uploads_touched_at"), table_name="blob_uploads")
    op.drop_table("blob_uploads")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("state")
