"""tenants' text is sealed at rest: chunks' tsvector computed by the writer, titles of any length

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:00:00

`chunks.tsv` was generated from `chunks.text`; once the text is sealed with the tenant's key (ciphertext in
the column), Postgres can no longer derive it, so the column becomes a plain one that the writers fill
with `to_tsvector('english', <clear text>)` in the same transaction. Existing values are kept.
A sealed conversation title is longer than the 500 characters it seals: the column becomes text (the API
still bounds the title itself).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE chunks ALTER COLUMN tsv DROP EXPRESSION")
    op.execute("ALTER TABLE conversations ALTER COLUMN title TYPE text")


def downgrade() -> None:
    op.execute("ALTER TABLE conversations ALTER COLUMN title TYPE varchar(500)")
    # Generated again from the stored text: right only while no chunk text is sealed.
    op.execute("ALTER TABLE chunks DROP COLUMN tsv")
    op.execute(
        "ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
    )
    op.execute("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")
