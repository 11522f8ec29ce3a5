"""Evaluation and traffic: retrieval evaluation on BEIR data, IR metrics, synthetic traffic over the SSE
API."""
