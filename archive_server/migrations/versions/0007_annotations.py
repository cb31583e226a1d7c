"""The annotation layer of a case version (issue 11): ``case_versions.annotations``,
media SHA-256 -> shapes, kept apart from the stored files.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("case_versions") as batch:
        batch.add_column(sa.Column("annotations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case_versions") as batch:
        batch.drop_column("annotations")
