"""JSON objects given as job parameters (training parameters, monitoring thresholds)."""

from __future__ import annotations

import json
from typing import Any


def parse_json_object(text: str, what: str, error_type: type[Exception] = ValueError) -> dict[str, Any]:
    """A JSON object given as a job parameter ("" means {}), or `error_type` naming `what` is wrong."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise error_type(f"{what} are not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise error_type(f"{what} must be a JSON object, got {text!r}")
    return value
