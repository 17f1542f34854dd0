"""Feature engineering: pure Spark transforms over trips, and the feature lookups for training."""
