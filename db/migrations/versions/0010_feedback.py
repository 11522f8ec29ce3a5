"""Feedback: one current verdict per message and API key, beside the message and its provenance

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 11:30:00

A verdict is +1 or -1 with an optional reason and comment (the comment is PII-redacted and sealed
like any user text). A second post by the same key replaces it; a delete withdraws it. Rows go with
their message (retention, erasure) through the foreign key. Like `messages`, no row-level security:
the API scopes every read and write to the key's tenant, and the experiment reports read across
tenants.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "turnflow_app"


def upgrade() -> None:
    op.execute(
        """CREATE TABLE feedback (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            message_id uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            key_id uuid NOT NULL,
            score smallint NOT NULL CHECK (score IN (-1, 1)),
            reason varchar(20) CHECK (reason IN ('inaccurate', 'unhelpful', 'unsafe', 'other')),
            comment text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_feedback_message_key UNIQUE (message_id, key_id)
        )"""
    )
    op.execute("CREATE INDEX ix_feedback_tenant_updated ON feedback (tenant_id, updated_at)")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON feedback TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP TABLE feedback")
