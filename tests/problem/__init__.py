"""Tests of the example problem (taxi fares): delete or replace them with `mlops_template.problem`."""
