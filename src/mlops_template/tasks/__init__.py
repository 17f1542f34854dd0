"""Job tasks: one module per task, each a `main` entry point over a typed config."""
