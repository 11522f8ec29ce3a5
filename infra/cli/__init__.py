"""The `turnflow` command, the roof: one module per command group; nothing imports it."""
