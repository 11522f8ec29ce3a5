"""Temporal activities: every side effect of a workflow lives here, grouped by the clients it needs."""
