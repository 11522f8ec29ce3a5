"""How turnflow runs: settings, the temporal.yaml policy, the embedded stack and its supervisor, the CLI."""
