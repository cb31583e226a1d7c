"""The ops page (issue 11/17): each agent's spool space with its heartbeat
snapshot, and the recent history of its heartbeats (started, back after a
silence, state, version, errors).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_status") as batch:
        batch.add_column(sa.Column("spool_free_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("spool_bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "agent_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.agent_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_agent_history_agent_id", "agent_history", ["agent_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_agent_history_agent_id", table_name="agent_history")
    op.drop_table("agent_history")
    with op.batch_alter_table("agent_status") as batch:
        batch.drop_column("spool_bytes")
        batch.drop_column("spool_free_bytes")
