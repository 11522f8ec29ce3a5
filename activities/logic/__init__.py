"""Pure functions of the turn and of ingestion: routing, prompt assembly, PII, safety rules, parsing,
chunking."""
