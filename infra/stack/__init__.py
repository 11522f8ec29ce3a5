"""The embedded stack behind `turnflow up`: supervised processes for Temporal, Postgres, Redis, the model
server and turnflow."""
