"""The fleet (issue 17): each agent's clock skew with its heartbeat snapshot,
and each department's registered capture devices (R6), handed to its agents.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_status") as batch:
        batch.add_column(sa.Column("clock_skew_s", sa.Float(), nullable=True))
    op.create_table(
        "department_devices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("make", sa.String(length=255), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("serial", sa.String(length=255), nullable=False),
        sa.Column("make_key", sa.String(length=255), nullable=False),
        sa.Column("model_key", sa.String(length=255), nullable=False),
        sa.Column("serial_key", sa.String(length=255), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["department_id"], ["departments.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("department_id", "make_key", "model_key", "serial_key"),
    )
    op.create_index("ix_department_devices_department_id", "department_devices", ["department_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_department_devices_department_id", table_name="department_devices")
    op.drop_table("department_devices")
    with op.batch_alter_table("agent_status") as batch:
        batch.drop_column("clock_skew_s")
