"""Agent certificates and department-bound dedup (issue 10).

* ``agent_bindings``: the certificate (SHA-256 fingerprint) bound to each
  agent id and department by ``admin agent add``; revoked by ``admin agent revoke``.
* ``session_blobs``: the blobs whose bytes a session sent, so that dedup never
  crosses a department.
* an index on ``media_items.blob_sha256``: "does this department hold this
  blob" is asked on every FindMissingBlobs and CommitSession.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_bindings",
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bound_by", sa.String(length=255), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["department_id"], ["departments.id"]),
        sa.PrimaryKeyConstraint("agent_id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_table(
        "session_blobs",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["ingest_sessions.session_id"]),
        sa.PrimaryKeyConstraint("session_id", "sha256"),
    )
    op.create_index("ix_media_items_blob_sha256", "media_items", ["blob_sha256"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_media_items_blob_sha256", table_name="media_items")
    op.drop_table("session_blobs")
    op.drop_table("agent_bindings")
