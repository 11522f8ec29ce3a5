"""An answer made of the retrieved passages' own sentences, for when no model can answer: the
sentences closest to the question, each cited by its document's title, within a token budget."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from activities.contracts.turn import ContextChunk
from activities.logic.prompt import sentence_scores

NOTE = "The assistant is unavailable; here is what the documents say."
MAX_SENTENCES = 5


def extractive_answer(
    question: str,
    chunks: Sequence[ContextChunk],
    titles: Mapping[str, str],
    budget: int,
    count: Callable[[str], int],
) -> str:
    """The best sentences of the passages (retrieval's order breaks ties), most relevant first, each
    followed by its document's title in brackets, within ``budget`` tokens as ``count`` counts;
    empty when no sentence shares a word with the question."""
    scored = [
        (score, rank, position, sentence, titles.get(chunk.document_id) or "a document")
        for rank, chunk in enumerate(chunks)
        for score, position, sentence in sentence_scores(chunk.text, question)
        if score > 0
    ]
    lines: list[str] = []
    used = 0
    for _, _, _, sentence, title in sorted(scored, key=lambda t: (-t[0], t[1], t[2])):
        line = f"{sentence.strip()} [{title}]"
        cost = count(line + "\n")
        if used + cost > budget or line in lines:
            continue
        lines.append(line)
        used += cost
        if len(lines) == MAX_SENTENCES:
            break
    return "\n".join(lines)
