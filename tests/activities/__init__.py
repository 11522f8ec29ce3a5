"""The steps: routing, models and their failures, breakers, prompts, guards, retrieval, ingestion,
retention."""
