"""BM25 lexical search: each chunk's term weights as a sparse vector, and per-tenant term statistics

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 21:30:00

`chunks.bm25` holds a chunk's BM25 document side: for each lexeme of its tsvector (the English
configuration: stemmed, stopwords out), the saturated, length-normalised term frequency
tf·(k1+1) / (tf + k1·(1 - b + b·dl/avgdl)), at the index `bm25_term_id(lexeme)`. A query's vector
holds each of its lexemes' IDF, so the inner product of the two is the chunk's BM25 score.

The IDF needs document frequencies, and the length normalisation an average length, per tenant and
embedding version (what one search ranks over): `lexicon_totals` and `lexicon_terms` are kept by
statement-level triggers on `chunks` from the rows that go live or stop being live, whichever path
does it (activation, tombstones, purges, erasure, cascades). `lexicon_totals.weighted_*` records the
avgdl, k1 and b that the stored vectors were computed with; when the live average drifts, the
vectors are rewritten in the background (activities/adapters/lexicon.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "turnflow_app"
TENANT_MATCH = "tenant_id = NULLIF(current_setting('turnflow.tenant', true), '')::uuid"
# sparsevec's largest dimension; lexemes hash into it (collisions among a tenant's ~10^5 terms: ~0).
DIM = 1_000_000_000

# The rows a statement moved in or out of the searchable set, as (key, tsvector, +1 | -1).
_DELTA = {
    "INSERT": """SELECT tenant_id, coalesce(embedding_model, '') AS model,
                        coalesce(embedding_version, '') AS version, tsv, 1 AS sign
                 FROM added WHERE live""",
    "DELETE": """SELECT tenant_id, coalesce(embedding_model, '') AS model,
                        coalesce(embedding_version, '') AS version, tsv, -1 AS sign
                 FROM removed WHERE live""",
    # Only rows whose searchable state changed: most updates (embeddings, re-weighting) change none.
    "UPDATE": """SELECT o.tenant_id, coalesce(o.embedding_model, '') AS model,
                        coalesce(o.embedding_version, '') AS version, o.tsv, -1 AS sign
                 FROM removed o JOIN added n ON n.id = o.id
                 WHERE o.live AND (NOT n.live OR (o.embedding_model, o.embedding_version, o.tsv)
                                   IS DISTINCT FROM (n.embedding_model, n.embedding_version, n.tsv))
                 UNION ALL
                 SELECT n.tenant_id, coalesce(n.embedding_model, ''), coalesce(n.embedding_version, ''),
                        n.tsv, 1
                 FROM removed o JOIN added n ON n.id = o.id
                 WHERE n.live AND (NOT o.live OR (o.embedding_model, o.embedding_version, o.tsv)
                                   IS DISTINCT FROM (n.embedding_model, n.embedding_version, n.tsv))""",
}


def _trigger_function(op_name: str) -> str:
    delta = _DELTA[op_name]
    # Totals first, in every statement: a writer holds its key's totals row before any term row, so
    # two writers of one tenant queue on it instead of deadlocking over terms. Counts only ever fall
    # by UPDATE (a cascade from a deleted tenant must not insert rows that reference it). A term whose
    # count falls to 0 keeps its row (searches skip it; it is reused when the term comes back).
    return f"""
    CREATE FUNCTION chunks_lexicon_{op_name.lower()}() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
      WITH d AS ({delta}),
      per_key AS (
        SELECT d.tenant_id, d.model, d.version, sum(d.sign) AS chunks, sum(d.sign * l.dl) AS length
        FROM d, LATERAL (SELECT coalesce(sum(coalesce(cardinality(positions), 1)), 0) AS dl
                         FROM unnest(d.tsv)) AS l
        GROUP BY 1, 2, 3
      ), grown AS (
        INSERT INTO lexicon_totals AS t (tenant_id, embedding_model, embedding_version, chunks, length)
        SELECT tenant_id, model, version, chunks, length FROM per_key WHERE chunks > 0
        ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, embedding_model, embedding_version) DO UPDATE
          SET chunks = t.chunks + excluded.chunks, length = t.length + excluded.length
      )
      UPDATE lexicon_totals t SET chunks = t.chunks + p.chunks, length = t.length + p.length
      FROM per_key p
      WHERE p.chunks <= 0 AND t.tenant_id = p.tenant_id AND t.embedding_model = p.model
        AND t.embedding_version = p.version;

      WITH d AS ({delta}),
      per_term AS (
        SELECT d.tenant_id, d.model, d.version, u.lexeme AS term, sum(d.sign) AS df
        FROM d, unnest(d.tsv) AS u GROUP BY 1, 2, 3, 4
      ), grown AS (
        INSERT INTO lexicon_terms AS t (tenant_id, embedding_model, embedding_version, term, df)
        SELECT tenant_id, model, version, term, df FROM per_term WHERE df > 0
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (tenant_id, embedding_model, embedding_version, term) DO UPDATE
          SET df = t.df + excluded.df
      )
      UPDATE lexicon_terms t SET df = t.df + p.df
      FROM per_term p
      WHERE p.df < 0 AND t.tenant_id = p.tenant_id AND t.embedding_model = p.model
        AND t.embedding_version = p.version AND t.term = p.term;
      RETURN NULL;
    END $fn$
    """


_REFERENCING = {
    "INSERT": "REFERENCING NEW TABLE AS added",
    "DELETE": "REFERENCING OLD TABLE AS removed",
    "UPDATE": "REFERENCING OLD TABLE AS removed NEW TABLE AS added",
}


def upgrade() -> None:
    op.execute(f"ALTER TABLE chunks ADD COLUMN bm25 sparsevec({DIM})")
    # Kept in the row (not TOASTed beside it): an exact lexical scan reads it for every chunk.
    op.execute("ALTER TABLE chunks ALTER COLUMN bm25 SET STORAGE MAIN")
    op.execute(
        """CREATE TABLE lexicon_totals (
            tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            embedding_model varchar(200) NOT NULL,
            embedding_version varchar(100) NOT NULL,
            chunks bigint NOT NULL DEFAULT 0,
            length bigint NOT NULL DEFAULT 0,
            weighted_avgdl float8,
            weighted_k1 float8,
            weighted_b float8,
            PRIMARY KEY (tenant_id, embedding_model, embedding_version)
        )"""
    )
    op.execute(
        """CREATE TABLE lexicon_terms (
            tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            embedding_model varchar(200) NOT NULL,
            embedding_version varchar(100) NOT NULL,
            term text NOT NULL,
            df integer NOT NULL,
            PRIMARY KEY (tenant_id, embedding_model, embedding_version, term)
        )"""
    )
    for table in ("lexicon_totals", "lexicon_terms"):
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} USING ({TENANT_MATCH}) WITH CHECK ({TENANT_MATCH})"
        )
    op.execute(
        f"""CREATE FUNCTION bm25_term_id(lexeme text) RETURNS integer
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN (abs(hashtextextended(lexeme, 0) % {DIM - 1}) + 1)::integer"""
    )
    op.execute(
        f"""CREATE FUNCTION bm25_document(tsv tsvector, avgdl float8, k1 float8, b float8) RETURNS sparsevec
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
            WITH t AS (SELECT lexeme, coalesce(cardinality(positions), 1)::float8 AS tf FROM unnest(tsv)),
                 n AS (SELECT sum(tf) AS dl FROM t),
                 w AS (SELECT bm25_term_id(lexeme) AS i,
                              sum(tf * (k1 + 1) / (tf + k1 * (1 - b + b * n.dl / greatest(avgdl, 1)))) AS v
                       FROM t, n GROUP BY 1
                       ORDER BY v DESC LIMIT 1000)  -- what an HNSW index takes (a chunk has ~100)
            SELECT coalesce('{{' || string_agg(i || ':' || v, ',' ORDER BY i) || '}}/{DIM}',
                            '{{}}/{DIM}')::sparsevec
            FROM w
            $fn$"""
    )
    for op_name, referencing in _REFERENCING.items():
        op.execute(_trigger_function(op_name))
        op.execute(
            f"CREATE TRIGGER chunks_lexicon_{op_name.lower()} AFTER {op_name} ON chunks {referencing}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION chunks_lexicon_{op_name.lower()}()"
        )
    # Top-n by BM25 for a large tenant, as the vectors have theirs (a small one is scanned exactly).
    op.execute("CREATE INDEX ix_chunks_bm25_hnsw ON chunks USING hnsw (bm25 sparsevec_ip_ops)")
    # Existing chunks: statistics from the live ones, vectors with their tenant's average length.
    op.execute(
        """INSERT INTO lexicon_totals (tenant_id, embedding_model, embedding_version, chunks, length)
           SELECT tenant_id, coalesce(embedding_model, ''), coalesce(embedding_version, ''), count(*),
                  sum((SELECT coalesce(sum(coalesce(cardinality(positions), 1)), 0) FROM unnest(tsv)))
           FROM chunks WHERE live GROUP BY 1, 2, 3"""
    )
    op.execute(
        """INSERT INTO lexicon_terms (tenant_id, embedding_model, embedding_version, term, df)
           SELECT c.tenant_id, coalesce(c.embedding_model, ''), coalesce(c.embedding_version, ''),
                  u.lexeme, count(*)
           FROM chunks c, unnest(c.tsv) AS u WHERE c.live GROUP BY 1, 2, 3, 4"""
    )
    op.execute(
        """UPDATE lexicon_totals SET weighted_avgdl = length::float8 / greatest(chunks, 1),
                                     weighted_k1 = 1.2, weighted_b = 0.4"""
    )
    op.execute(
        """UPDATE chunks c SET bm25 = bm25_document(c.tsv, t.weighted_avgdl, 1.2, 0.4)
           FROM lexicon_totals t
           WHERE t.tenant_id = c.tenant_id AND t.embedding_model = coalesce(c.embedding_model, '')
             AND t.embedding_version = coalesce(c.embedding_version, '')"""
    )


def downgrade() -> None:
    for op_name in _REFERENCING:
        op.execute(f"DROP TRIGGER IF EXISTS chunks_lexicon_{op_name.lower()} ON chunks")
        op.execute(f"DROP FUNCTION IF EXISTS chunks_lexicon_{op_name.lower()}()")
    op.execute("DROP FUNCTION IF EXISTS bm25_document(tsvector, float8, float8, float8)")
    op.execute("DROP FUNCTION IF EXISTS bm25_term_id(text)")
    op.execute("DROP INDEX IF EXISTS ix_chunks_bm25_hnsw")
    op.execute("DROP TABLE IF EXISTS lexicon_terms")
    op.execute("DROP TABLE IF EXISTS lexicon_totals")
    op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS bm25")
