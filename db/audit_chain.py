"""The audit log's hash chain (migration 0005), verified: each row's hash recomputed from its content
and its predecessor's hash, with the same SQL function the trigger used when the row was written.

Editing a row changes its hash; deleting one leaves a gap in `seq` and a `prev_hash` that names a row
that is no longer there; removing rows from the end is seen only against a chain head kept outside the
database (`turnflow audit head`), so export it where the database's administrators cannot write.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Per chain, the first row whose hash, predecessor or position does not hold.
_FIRST_BREAK = text(
    """
    SELECT DISTINCT ON (chain) chain, seq, id, problem FROM (
      SELECT chain, seq, id,
        CASE
          WHEN row_hash IS DISTINCT FROM audit_row_hash(prev_hash, e) THEN 'altered'
          WHEN tenant_id IS NOT NULL AND tenant_id::text <> chain THEN 'altered'
          WHEN seq <> coalesce(lag(seq) OVER w, 0) + 1 THEN 'missing'
          WHEN prev_hash IS DISTINCT FROM lag(row_hash) OVER w THEN 'predecessor'
        END AS problem
      FROM audit_events e
      WINDOW w AS (PARTITION BY chain ORDER BY seq)
    ) checked
    WHERE problem IS NOT NULL
    ORDER BY chain, seq
    """
)

_HEADS = text(
    "SELECT DISTINCT ON (chain) chain, seq, id, row_hash FROM audit_events ORDER BY chain, seq DESC"
)

_EXPLAIN = {
    "altered": "its content no longer matches its hash (edited)",
    "missing": "the row(s) before it are gone (deleted)",
    "predecessor": "it does not follow the row before it (that row was edited or replaced)",
}


@dataclass(frozen=True)
class ChainBreak:
    chain: str
    seq: int
    row_id: int
    problem: str

    def describe(self) -> str:
        return f"chain {self.chain}: audit row {self.row_id} (#{self.seq}): {_EXPLAIN[self.problem]}"


@dataclass(frozen=True)
class ChainHead:
    chain: str
    seq: int
    row_id: int
    row_hash: str


async def chain_breaks(session: AsyncSession) -> list[ChainBreak]:
    """The first break of every chain that has one; empty when the whole log holds."""
    rows = await session.execute(_FIRST_BREAK)
    return [ChainBreak(r.chain, int(r.seq), int(r.id), str(r.problem)) for r in rows]


async def chain_heads(session: AsyncSession) -> list[ChainHead]:
    """Each chain's latest row: what to keep outside the database."""
    rows = await session.execute(_HEADS)
    return [ChainHead(r.chain, int(r.seq), int(r.id), str(r.row_hash)) for r in rows]


async def heads_lost(session: AsyncSession, kept: list[ChainHead]) -> list[str]:
    """Kept heads the log no longer holds as they were: its end was cut, or rewritten, since."""
    problems = []
    for head in kept:
        found = await session.scalar(
            text("SELECT row_hash FROM audit_events WHERE chain = :chain AND seq = :seq"),
            {"chain": head.chain, "seq": head.seq},
        )
        if found is None:
            problems.append(f"chain {head.chain}: rows up to #{head.seq} (audit row {head.row_id}) are gone")
        elif found != head.row_hash:
            problems.append(f"chain {head.chain}: row #{head.seq} (audit row {head.row_id}) was rewritten")
    return problems
