"""Workflow code on the time-skipping server, and recorded histories replayed on the current code."""
