"""Configuration, the ground floor: settings, the policy file (temporal.yaml) and what it declares. Imports
nothing of turnflow."""
