"""JSON objects given as job parameters (training parameters, monitoring thresholds)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_json_object(text: str, what: str, error_type: type[Exception] = ValueError) -> dict[str, Any]:
    """A JSON object given as a job parameter ("" means {}), or `error_type` naming `what` is wrong."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise error_type(f"{what} are not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise error_type(f"{what} must be a JSON object, got {text!r}")
    return value


def validated_json_object(
    model: type[ModelT],
    text: str,
    what: str,
    error_type: type[Exception] = ValueError,
    context: dict[str, Any] | None = None,
) -> ModelT:
    """`model` with the fields the JSON object `text` overrides; `error_type` lists each bad one."""
    overrides = parse_json_object(text, what, error_type)
    try:
        return model.model_validate(overrides, context=context)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in error.errors()
        )
        raise error_type(f"bad {what}: {problems}") from None
