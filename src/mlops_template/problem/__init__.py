"""The team's problem: the example predicts NYC taxi fares. Replace this package as one unit.

`spec.PROBLEM` is what the generic pipeline reads; `data`, `features` and `model` are the
problem's own code it points at. The example's tests are under `tests/problem/`.
"""
