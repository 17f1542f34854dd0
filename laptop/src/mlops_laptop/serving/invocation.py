"""Parse and check one invocation request with MLflow's own scoring-server code.

Bodies are JSON objects with exactly one of `dataframe_split`, `dataframe_records`, `instances`,
`inputs` (+ `params`, `client_request_id`). Every problem is an `InvocationError` carrying the 4xx
status and a message that says what is wrong; nothing here may raise anything else for bad input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.utils import _enforce_params_schema, _enforce_schema
from mlflow.pyfunc.scoring_server import (
    DF_RECORDS,
    DF_SPLIT,
    SUPPORTED_FORMATS,
    _split_data_and_params,
    infer_and_parse_data,
)
from mlflow.types import ParamSchema, Schema
from mlflow.utils.proto_json_utils import cast_df_types_according_to_schema

MAX_REQUEST_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_MESSAGE_CHARS = 1000
JSON_CONTENT_TYPE = "application/json"
_DATAFRAME_FORMATS = (DF_SPLIT, DF_RECORDS)

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1


ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


class InvocationError(Exception):
    """A request the endpoint refuses or fails: HTTP status, Databricks-style error code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = ERROR_CODES.get(status, "BAD_REQUEST")
        self.message = message[:MAX_MESSAGE_CHARS]

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


def bad_request(message: str) -> InvocationError:
    return InvocationError(400, message)


@dataclass(frozen=True)
class Invocation:
    """A parsed request: the model input (extra columns dropped, the required ones present) and its
    params. `conform` then casts and checks the input against the schema, batch by batch."""

    frame: pd.DataFrame
    params: dict[str, Any] | None


def check_content_type(content_type: str | None) -> None:
    """Only `application/json` (UTF-8) is accepted, as on Databricks."""
    mime, _, parameters = (content_type or "").partition(";")
    charset = (
        parameters.strip().lower().removeprefix("charset=").strip('"') if parameters.strip() else "utf-8"
    )
    if mime.strip().lower() != JSON_CONTENT_TYPE or charset not in ("utf-8", "utf8"):
        raise InvocationError(
            415, f"Content-Type must be {JSON_CONTENT_TYPE} (UTF-8), got '{content_type or ''}'"
        )


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of the body; nesting deeper than `MAX_JSON_DEPTH` is refused before parsing."""
    if not body.strip():
        raise bad_request("the request body is empty: send a JSON object with one of " + _formats())
    if _too_deep(body):
        raise bad_request(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"the body is not valid UTF-8 JSON: {error}") from None
    if not isinstance(payload, dict):
        raise bad_request(
            f"the body must be a JSON object with one of {_formats()}, got {type(payload).__name__}"
        )
    return payload


def client_request_id(payload: dict[str, Any]) -> str | None:
    """The caller's `client_request_id`, which must be a string when given."""
    value = payload.get("client_request_id")
    if value is not None and not isinstance(value, str):
        raise bad_request("client_request_id must be a string")
    return value


def parse_invocation(payload: dict[str, Any], schema: Schema) -> Invocation:
    """The model input of `payload` parsed by MLflow, with extra columns dropped.

    `dataframe_split` / `dataframe_records` are read as they come and `conform`ed per batch (the
    per-column casting costs the same for one row as for a thousand); `instances` / `inputs` need
    the schema to be read at all, so they are conformed here.
    """
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise bad_request(f"params must be a JSON object, got {type(params).__name__}")
    formats = [key for key in payload if key in SUPPORTED_FORMATS]
    if len(formats) != 1:
        raise bad_request(f"the body must have exactly one of {_formats()}, got {formats or 'none'}")
    input_format = formats[0]
    data, _ = _split_data_and_params(payload)
    try:
        if input_format in _DATAFRAME_FORMATS:
            frame = _without_extra_columns(infer_and_parse_data(data), schema)
        else:
            frame = _enforce_schema(
                _without_extra_columns(infer_and_parse_data(data, schema), schema), schema
            )
    except MlflowException as error:
        raise bad_request(f"{input_format} does not match the model's input: {error.message}") from None
    except Exception as error:  # parsing client data: whatever fails is the request's fault
        raise bad_request(f"{input_format} could not be read as the model's input: {error}") from None
    if len(frame) == 0:
        raise bad_request(f"{input_format} has no rows")
    missing = [name for name in schema.required_input_names() if name not in frame.columns]
    if missing:
        raise bad_request(f"{input_format} is missing inputs {missing}")
    return Invocation(frame=frame, params=params)


def conform(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """`frame` cast to the schema's types and checked by MLflow, as its scoring server does."""
    try:
        return _enforce_schema(cast_df_types_according_to_schema(frame, schema), schema)
    except MlflowException as error:
        raise bad_request(f"the input does not match the model's schema: {error.message}") from None
    except Exception as error:  # the values came from the client
        raise bad_request(f"the input could not be read as the model's input: {error}") from None


def check_params(params: dict[str, Any] | None, schema: ParamSchema | None) -> None:
    """Check `params` against the model's params schema with MLflow's own enforcement."""
    try:
        _enforce_params_schema(params, schema)
    except MlflowException as error:
        raise bad_request(f"params do not match the model's params schema: {error.message}") from None


def _without_extra_columns(parsed: Any, schema: Schema) -> Any:
    """Drop inputs the signature does not name (MLflow would ignore them with a warning per call)."""
    names = set(schema.input_names())
    if isinstance(parsed, pd.DataFrame):
        extra = [column for column in parsed.columns if column not in names]
        return parsed.drop(columns=extra) if extra else parsed
    if isinstance(parsed, dict):
        return {key: value for key, value in parsed.items() if key in names}
    return parsed


def _too_deep(body: bytes) -> bool:
    """Whether brackets outside JSON strings nest deeper than `MAX_JSON_DEPTH` (no recursion)."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False
    steps = _DEPTH_STEP[np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)]
    brackets = steps[steps != 0]
    return brackets.size > 0 and int(np.cumsum(brackets, dtype=np.int64).max()) > MAX_JSON_DEPTH


def _formats() -> str:
    return ", ".join(sorted(SUPPORTED_FORMATS))
