"""`mlops model`: the registry commands."""
