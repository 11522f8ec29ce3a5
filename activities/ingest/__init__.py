"""The activities the ingest worker registers: ingestion, re-embedding, purge and retention."""
