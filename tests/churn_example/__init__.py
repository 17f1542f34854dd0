"""A small binary-classification problem (customer churn) run through the generic pipeline."""
