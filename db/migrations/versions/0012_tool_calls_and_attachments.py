"""Tool calls, attachments and moderation records on messages

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 01:40:00

A reply that called tools keeps its calls (id, name, arguments as OpenAI spells them); a `tool`
message, the results a client sent back, keeps the calls it answers. A question's images are kept
by reference: a link (sealed), or for an inline image its media type, size and SHA-256, never its
bytes. A reply's moderation record says which moderator judged it, its version and the categories.
Content stays sealed text.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("tool_calls", JSONB, nullable=True))
    op.add_column("messages", sa.Column("attachments", JSONB, nullable=True))
    op.add_column("messages", sa.Column("moderation", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "moderation")
    op.drop_column("messages", "attachments")
    op.drop_column("messages", "tool_calls")
