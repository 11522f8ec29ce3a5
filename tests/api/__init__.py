"""The API: keys and scopes, turns over SSE and JSON, the contract, health, the dashboard, the codec."""
