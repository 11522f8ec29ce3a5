"""Clients of what a step leans on: model servers, Redis (events, breakers, limits, admission), pgvector
search."""
