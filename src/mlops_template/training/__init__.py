"""Training: hyper-parameters, the model pipeline, held-out evaluation, plots and MLflow logging."""
