"""The whole stack at once, with processes and dependencies killed on purpose."""
