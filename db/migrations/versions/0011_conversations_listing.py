"""Conversations listed newest first per tenant (GET /v1/conversations)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 18:40:00

Keyset pagination walks (created_at, id) downwards within a tenant: this index answers each page
without a sort, however many conversations the tenant has.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_conversations_tenant_created ON conversations (tenant_id, created_at, id)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_conversations_tenant_created")
