"""Every step's input and output, and every workflow's: what travels through Temporal histories."""
