"""Read a data set in BEIR's layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirDoc:
    id: str
    title: str
    text: str

    @property
    def content(self) -> str:
        return f"{self.title}\n\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class BeirDataset:
    corpus: list[BeirDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id → {doc id: grade}
    fingerprint: str = ""  # of the corpus file: a kept evaluation tenant is reused only for the same one


class DatasetError(ValueError):
    pass


def load_beir(root: Path, split: str = "test") -> BeirDataset:
    files = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for what, path in files.items():
        if not path.is_file():
            raise DatasetError(f"{root} is not a BEIR data set: {what} file {path} is missing")
    corpus = []
    with files["corpus"].open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                    corpus.append(BeirDoc(str(row["_id"]), row.get("title") or "", row.get("text") or ""))
                except (json.JSONDecodeError, KeyError) as exc:
                    raise DatasetError(f"{files['corpus']}:{n}: {exc}") from exc
    queries = {}
    with files["queries"].open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    with files["qrels"].open(encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    # Only judged queries are evaluated.
    judged = {q: t for q, t in queries.items() if q in qrels}
    if not judged:
        raise DatasetError(f"no query in {files['queries']} has judgments in {files['qrels']}")
    fingerprint = hashlib.sha256(files["corpus"].read_bytes()).hexdigest()[:16]
    return BeirDataset(corpus, judged, {q: qrels[q] for q in judged}, fingerprint)
