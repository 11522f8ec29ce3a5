"""Benchmarks: each reports p50/p95 against a baseline measured in the same run."""
