"""Monitoring: the endpoint's inference table unpacked, drift and quality per time window, retraining.

- `tables`: the monitoring tables of an inference-table prefix; window lengths.
- `unpack`: AI-Gateway payload rows (one per request) -> one row per prediction, incrementally.
- `ground_truth`: actual fares keyed by trip_id, joined onto predictions as labels.
- `baseline`: the reference sample (the pipeline's trips with the training feature building).
- `drift`: population stability index and two-sample KS statistic.
- `metrics`: per window drift, quality (RMSE, MAE), error rate and latency percentiles.
- `config`: the thresholds; `check`: the retrain decision from the latest windows.
- `tracking`, `plots`: the MLflow run (tag `monitoring`) and its figure.
- `heldout`, `simulate`: realistic traffic for the local endpoint (`mlops simulate-traffic`).
- `report`, `cli`: the text report (`mlops monitor report`).
"""
