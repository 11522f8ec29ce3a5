"""Temporal workflows. Deterministic code only: all I/O happens in activities."""
