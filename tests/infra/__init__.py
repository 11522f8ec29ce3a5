"""Settings and policy, the embedded stack and its supervisor, evaluation, telemetry."""
