"""Monitoring: the endpoint's inference table unpacked, drift and quality per time window, retraining.

Every module reads the problem spec (`mlops_template.problem_spec`) for the row id, the label, the
model inputs and the task type; none names the problem.

- `tables`: the monitoring tables of an inference-table prefix; window lengths.
- `unpack`: AI-Gateway payload rows (one per request) -> one row per prediction, incrementally.
- `ground_truth`: the labels keyed by the row id, joined onto predictions.
- `baseline`: the reference sample (prepared rows with the training feature building) and the
  champion's predictions on it.
- `drift`: population stability index and two-sample KS statistic.
- `metrics`: per window drift, quality (the task type's metrics), error rate and latency percentiles.
- `config`: the thresholds; `check`: the retrain decision from the latest windows.
- `tracking`, `plots`: the MLflow run (tag `monitoring`) and its figure.
- `report`: the text report (`mlops monitor report`, notebook 05).

The laptop's traffic simulator and its ground truth live in `mlops_laptop.monitoring`.
"""
