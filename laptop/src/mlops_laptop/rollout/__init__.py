"""`mlops rollout`: the live experiment's per-variant metrics and decision."""
