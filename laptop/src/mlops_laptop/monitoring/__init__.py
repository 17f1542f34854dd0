"""The traffic simulator for the local endpoint and the `mlops monitor` commands."""
