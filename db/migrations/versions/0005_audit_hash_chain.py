"""audit hash chain: each audit row carries the hash of its content and of the row before it (per tenant)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:30:00

The chain is made by the database, in a BEFORE INSERT trigger under a per-chain advisory lock: every
writer (the API, workers, the CLI) gets it without doing anything, and two concurrent writers cannot
fork a chain (each row's `seq` is its predecessor's plus one, unique per chain). `chain` is fixed when
the row is written (the tenant's id, or `platform`), so a tenant's later deletion (tenant_id set to NULL)
does not break it. `turnflow audit verify` recomputes every hash with the same function.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# quote_nullable tells NULL from '' and each field from the next; jsonb's text form is canonical; the
# time is written in UTC, whatever the session's time zone. tenant_id is not hashed (a tenant's deletion
# sets it to NULL): `chain` holds it as written, and verification compares the two.
ROW_HASH = """
CREATE FUNCTION audit_row_hash(prev text, e audit_events) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT encode(sha256(convert_to(concat_ws(',',
    quote_nullable(prev), quote_nullable(e.chain), e.seq::text, e.id::text,
    quote_nullable(to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')),
    quote_nullable(e.actor), quote_nullable(e.action),
    quote_nullable(e.object_type), quote_nullable(e.object_id), quote_nullable(e.request_id),
    quote_nullable(e.details::text)), 'UTF8')), 'hex')
$$
"""

CHAIN_TRIGGER = """
CREATE FUNCTION audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  last_seq bigint;
BEGIN
  NEW.chain := coalesce(NEW.tenant_id::text, 'platform');
  PERFORM pg_advisory_xact_lock(hashtextextended('turnflow.audit:' || NEW.chain, 0));
  SELECT seq, row_hash INTO last_seq, NEW.prev_hash
    FROM audit_events WHERE chain = NEW.chain ORDER BY seq DESC LIMIT 1;
  NEW.seq := coalesce(last_seq, 0) + 1;
  NEW.row_hash := audit_row_hash(NEW.prev_hash, NEW);
  RETURN NEW;
END
$$
"""

# Rows written before the chain existed join it in their order of writing.
BACKFILL = """
DO $$
DECLARE
  r audit_events;
  prev text;
  current_chain text;
  n bigint := 0;
BEGIN
  FOR r IN SELECT * FROM audit_events ORDER BY coalesce(tenant_id::text, 'platform'), id LOOP
    IF current_chain IS DISTINCT FROM coalesce(r.tenant_id::text, 'platform') THEN
      current_chain := coalesce(r.tenant_id::text, 'platform');
      prev := NULL;
      n := 0;
    END IF;
    n := n + 1;
    r.chain := current_chain;
    r.seq := n;
    r.prev_hash := prev;
    r.row_hash := audit_row_hash(prev, r);
    UPDATE audit_events SET chain = r.chain, seq = r.seq, prev_hash = r.prev_hash, row_hash = r.row_hash
      WHERE id = r.id;
    prev := r.row_hash;
  END LOOP;
END
$$
"""


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("chain", sa.String(64), nullable=True))
    op.add_column("audit_events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("audit_events", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_events", sa.Column("row_hash", sa.String(64), nullable=True))
    op.execute(ROW_HASH)
    op.execute(BACKFILL)
    for column in ("chain", "seq", "row_hash"):
        op.alter_column("audit_events", column, nullable=False)
    op.create_index("uq_audit_chain_seq", "audit_events", ["chain", "seq"], unique=True)
    op.execute(CHAIN_TRIGGER)
    op.execute(
        "CREATE TRIGGER audit_chain BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_chain()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_chain ON audit_events")
    op.execute("DROP FUNCTION audit_chain()")
    op.drop_index("uq_audit_chain_seq", table_name="audit_events")
    op.execute("DROP FUNCTION audit_row_hash(text, audit_events)")
    for column in ("row_hash", "prev_hash", "seq", "chain"):
        op.drop_column("audit_events", column)
