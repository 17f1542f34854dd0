"""Traffic routing as Databricks does it: each request independently, by route percentages.

Sticky assignment (one key, one variant) is not routing: it is the A/B model (`ab_model`).
"""

from __future__ import annotations

import itertools
import random

from mlops_template.serving.spec import RouteSpec


class TrafficRouter:
    """Picks a served entity per request with the probabilities of the endpoint's routes."""

    def __init__(self, routes: list[RouteSpec], rng: random.Random | None = None) -> None:
        live = [route for route in routes if route.traffic_percentage > 0]
        self._names = [route.served_entity_name for route in live]
        self._cumulative = list(itertools.accumulate(route.traffic_percentage for route in live))
        self._rng = rng or random.Random()

    def choose(self) -> str:
        return self._rng.choices(self._names, cum_weights=self._cumulative)[0]
