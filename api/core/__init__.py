"""What every route leans on: dependencies, errors, tenancy (keys, limits), the audit trail, text checks."""
