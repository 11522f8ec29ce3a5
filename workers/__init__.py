"""Temporal worker processes."""
