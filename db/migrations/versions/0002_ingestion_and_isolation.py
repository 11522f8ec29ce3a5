"""ingestion, document versions, live chunks, per-tenant embedding version, row-level security

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "turnflow_app"
TENANT_TABLES = ("documents", "document_uploads", "chunks")
# The tenant a transaction works for; unset or empty means none, and no row passes.
TENANT_MATCH = "tenant_id = NULLIF(current_setting('turnflow.tenant', true), '')::uuid"


def upgrade() -> None:
    op.add_column("tenants", sa.Column("embedding_model", sa.String(length=200), nullable=True))
    op.add_column("tenants", sa.Column("embedding_version", sa.String(length=100), nullable=True))

    op.drop_constraint("uq_documents_tenant_hash", "documents", type_="unique")
    op.create_index(
        "uq_documents_tenant_source",
        "documents",
        ["tenant_id", "source"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_documents_tenant_hash", "documents", ["tenant_id", "content_hash"])
    for column in (
        sa.Column("size_bytes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("embedded_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pii_counts", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("workflow_id", sa.String(length=300), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    ):
        op.add_column("documents", column)

    op.create_table(
        "document_uploads",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("document_version", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=1000), nullable=False),
        sa.Column("mime_type", sa.String(length=100), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_document_uploads_tenant_id", "document_uploads", ["tenant_id"])
    op.create_index("ix_document_uploads_document_id", "document_uploads", ["document_id"])

    op.add_column("chunks", sa.Column("live", sa.Boolean(), server_default="false", nullable=False))
    op.execute("UPDATE chunks SET live = (tombstoned_at IS NULL)")
    op.create_unique_constraint(
        "uq_chunks_position_embedding",
        "chunks",
        ["document_id", "document_version", "ordinal", "embedding_model", "embedding_version"],
    )

    # The application's role: no superuser, no BYPASSRLS, so row-level security binds it.
    op.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN;
            END IF;
        END $$"""
    )
    op.execute(f"GRANT {APP_ROLE} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
    op.execute(f"REVOKE ALL ON alembic_version FROM {APP_ROLE}")
    op.execute(f"REVOKE UPDATE, DELETE ON audit_events FROM {APP_ROLE}")  # append-only
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} USING ({TENANT_MATCH}) WITH CHECK ({TENANT_MATCH})"
        )


def downgrade() -> None:
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {APP_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")
    op.drop_constraint("uq_chunks_position_embedding", "chunks", type_="unique")
    op.drop_column("chunks", "live")
    op.drop_table("document_uploads")
    for column in ("updated_at", "error", "workflow_id", "pii_counts", "embedded_count", "size_bytes"):
        op.drop_column("documents", column)
    op.drop_index("ix_documents_tenant_hash", table_name="documents")
    op.drop_index("uq_documents_tenant_source", table_name="documents")
    op.create_unique_constraint("uq_documents_tenant_hash", "documents", ["tenant_id", "content_hash"])
    op.drop_column("tenants", "embedding_version")
    op.drop_column("tenants", "embedding_model")
