"""observability: recent spans for `turnflow trace`, retrieval observations for drift, failed turns' errors

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "turnflow_app"


def upgrade() -> None:
    op.add_column("messages", sa.Column("error", postgresql.JSONB(), nullable=True))
    op.create_table(
        "trace_spans",
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_span_id", sa.String(16), nullable=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attributes", postgresql.JSONB(), nullable=False),
        sa.Column("events", postgresql.JSONB(), nullable=False),
        sa.Column("turn_id", sa.String(300), nullable=True),
    )
    op.create_index("ix_trace_spans_trace", "trace_spans", ["trace_id"])
    op.create_index("ix_trace_spans_turn", "trace_spans", ["turn_id"])
    op.create_index("ix_trace_spans_start", "trace_spans", ["start_time"])
    op.create_table(
        "retrieval_observations",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("top_score", sa.Float(), nullable=True),
        sa.Column("mean_score", sa.Float(), nullable=True),
        sa.Column("embedding_version", sa.String(100), nullable=True),
        sa.Column("query_embedding", Vector(384), nullable=True),
    )
    op.create_index("ix_retrieval_observations_tenant_at", "retrieval_observations", ["tenant_id", "at"])
    for table in ("trace_spans", "retrieval_observations"):
        op.execute(f"GRANT SELECT, INSERT, DELETE ON {table} TO {APP_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE retrieval_observations_id_seq TO {APP_ROLE}")


def downgrade() -> None:
    op.drop_table("retrieval_observations")
    op.drop_table("trace_spans")
    op.drop_column("messages", "error")
