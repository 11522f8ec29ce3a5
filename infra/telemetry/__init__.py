"""Telemetry, on the ground floor beside configuration: tracing and metrics setup, GenAI names, the span
store."""
