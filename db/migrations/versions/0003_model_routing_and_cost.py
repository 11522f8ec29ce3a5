"""model routing and cost: each reply records its route and cost; usage reads by tenant and time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("route", postgresql.JSONB(), nullable=True))
    op.add_column("messages", sa.Column("cost_usd", sa.Numeric(18, 10), nullable=True))
    op.add_column("messages", sa.Column("interactive", sa.Boolean(), server_default="true", nullable=False))
    op.create_index("ix_messages_tenant_created", "messages", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_tenant_created", table_name="messages")
    op.drop_column("messages", "interactive")
    op.drop_column("messages", "cost_usd")
    op.drop_column("messages", "route")
