"""Migrations, the vector index, and the reports computed in SQL (SLOs, drift)."""
