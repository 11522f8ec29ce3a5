"""tenant data keys: each tenant's payloads are encrypted with a key of its own, stored wrapped

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:30:00

A tenant's data key is stored only wrapped (encrypted by a key-encryption key that never enters the
database: the deployment's payload keys, or a KMS). Destroying it (`wrapped` set to NULL) is
crypto-shredding: every copy of what it encrypted, in Temporal's histories and in backups, stays
ciphertext for good.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "turnflow_app"


def upgrade() -> None:
    op.create_table(
        "tenant_keys",
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("kek_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON tenant_keys TO {APP_ROLE}")


def downgrade() -> None:
    op.drop_table("tenant_keys")
