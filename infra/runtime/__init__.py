"""What a process opens at start: its resources (the composition root), the Temporal client, payload codec,
schedules, probes."""
