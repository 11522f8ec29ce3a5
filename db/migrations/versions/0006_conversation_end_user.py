"""conversations name their end user (the app's own user id), so one user's data can be erased at once

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("end_user", sa.String(200), nullable=True))
    op.create_index("ix_conversations_tenant_end_user", "conversations", ["tenant_id", "end_user"])


def downgrade() -> None:
    op.drop_index("ix_conversations_tenant_end_user", table_name="conversations")
    op.drop_column("conversations", "end_user")
