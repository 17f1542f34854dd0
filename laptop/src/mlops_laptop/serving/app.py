"""The local endpoint app: the Databricks invocation API (and, with a control plane, the
serving-endpoints REST API of `control_plane`) over the local endpoints.

Routes: `POST /serving-endpoints/{name}/invocations` (traffic split by the endpoint's routes, per
request), `POST /serving-endpoints/{name}/served-models/{served}/invocations` (one served entity),
`GET /ping`, `GET /health`. Every invocation, answered or refused, is one inference-table record;
for a served entity with `ENABLE_FEATURE_TRACING=true` its logged response also holds the features
looked up (`databricks_output.feature_lookup`). Answers carry Databricks' `served-model-name`
header. Errors are JSON `{"error_code", "message"}`: 4xx for anything the client got wrong, 5xx
when the model or the server fails on a valid request.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from mlflow.pyfunc.scoring_server import predictions_to_json
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlops_laptop.serving.control_plane import API, ApiError, ControlPlane
from mlops_laptop.serving.endpoint import Endpoint, ServedModel
from mlops_laptop.serving.feature_lookup import LookupRecord
from mlops_laptop.serving.inference_table import (
    REQUEST_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    InferenceRecord,
    logged_payload,
)
from mlops_laptop.serving.invocation import (
    MAX_REQUEST_BYTES,
    InvocationError,
    bad_request,
    check_content_type,
    client_request_id,
    decode_body,
    parse_invocation,
)

log = logging.getLogger(__name__)

LOCAL_REQUESTER = "local"  # the fixed identity logged as `requester` (never the token)
# The served entity that answered, as Databricks names it (read by the SDK's `QueryEndpointResponse`).
SERVED_MODEL_NAME_HEADER = "served-model-name"
REQUEST_ID_HEADER = "x-request-id"
# A body over MAX_REQUEST_BYTES is read and discarded up to this size before the 413 is sent, so the
# client, still sending, reads the answer instead of a reset; larger ones are refused unread.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
_INLINE_PARSE_BYTES = 256 * 1024  # larger bodies are parsed in a worker thread, off the event loop
_INTERNAL_ERROR = json.dumps(
    {"error_code": "INTERNAL_ERROR", "message": "internal error, see the server log"}
)

T = TypeVar("T")


@dataclass
class _Exchange:
    """What one invocation leaves in the inference table, filled in as the request proceeds."""

    request_id: str
    received: datetime
    started: float
    request: str | None = None
    client_request_id: str | None = None
    served: ServedModel | None = None
    lookup: LookupRecord | None = None  # logged only when the served entity traces its features


class EndpointService:
    """Request handling for a set of local endpoints; `create_app` wires it into Starlette.

    With a control plane, the endpoints are its live ones (swapped by config updates) and persisted
    ones not loaded yet load at their first request; else the fixed list given.
    """

    def __init__(
        self, endpoints: list[Endpoint], token: str | None, control_plane: ControlPlane | None = None
    ) -> None:
        self.control_plane = control_plane
        self.endpoints = control_plane.live if control_plane else {e.name: e for e in endpoints}
        self._token = token.encode() if token else None

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        """Start batchers and table writers; on shutdown (SIGTERM included) flush the tables."""
        if self.control_plane is not None:
            await self.control_plane.start()
        else:
            for endpoint in self.endpoints.values():
                endpoint.start()
        log.info("serving endpoints: %s", ", ".join(self.endpoints) or "none yet")
        try:
            yield
        finally:
            if self.control_plane is not None:
                await self.control_plane.stop()
            else:
                for endpoint in self.endpoints.values():
                    for model in endpoint.models.values():
                        await model.batcher.stop()
                    if endpoint.table is not None:
                        await asyncio.to_thread(endpoint.table.close)
            log.info("endpoints stopped; inference tables flushed")

    async def ping(self, _request: Request) -> Response:
        """Liveness, with the server's process id: a client tells by it whether the server it
        reaches is the one a discovery file names."""
        return JSONResponse({"status": "ok", "pid": os.getpid()})

    async def host_metadata(self, _request: Request) -> Response:
        return JSONResponse({})

    def authenticate_api(self, request: Request) -> None:
        """The token check of the REST API, refusing as Databricks does (401 JSON)."""
        try:
            self._authenticate(request)
        except InvocationError as error:
            raise ApiError(401, error.error_code, error.message) from None

    async def health(self, request: Request) -> Response:
        """Status and per served entity the model version and batching counters."""
        try:
            self._authenticate(request)
        except InvocationError as error:
            return JSONResponse(error.body(), status_code=error.status)
        healthy = all(e.table is None or e.table.stats.healthy for e in self.endpoints.values())
        return JSONResponse(
            {
                "status": "ok" if healthy else "degraded",
                "endpoints": {name: _describe(endpoint) for name, endpoint in self.endpoints.items()},
            }
        )

    async def invoke(self, request: Request) -> Response:
        exchange = _Exchange(
            request_id=str(uuid.uuid4()), received=datetime.now(UTC), started=time.perf_counter()
        )
        name = request.path_params["endpoint"]
        endpoint = self.endpoints.get(name)
        with ExitStack() as in_flight:
            try:
                self._authenticate(request)
                if endpoint is None:
                    endpoint = await self._load(name)
                # No await between getting the endpoint, counting this request on it and reserving
                # the served model's batcher (the first step of `_answer`): an endpoint or a served
                # model replaced meanwhile still counts this request, and drains it before it stops.
                in_flight.enter_context(endpoint.serving())
                exchange.served = _served_model(endpoint, request.path_params.get("served"))
                status, text = 200, await self._answer(request, exchange)
            except InvocationError as error:
                status, text = error.status, json.dumps(error.body())
                log.warning("%s -> %d %s", request.url.path, status, error.message)
            except Exception:
                status, text = 500, _INTERNAL_ERROR
                log.exception("%s -> 500", request.url.path)
            if endpoint is not None:
                self._record(endpoint, exchange, status, text)
        headers = {REQUEST_ID_HEADER: exchange.request_id}
        if exchange.served is not None:
            headers[SERVED_MODEL_NAME_HEADER] = exchange.served.name
        if status == 413:  # the body may not have been read whole: this connection cannot carry another
            headers["connection"] = "close"
        return Response(text, status_code=status, media_type="application/json", headers=headers)

    async def _answer(self, request: Request, exchange: _Exchange) -> str:
        served = exchange.served
        assert served is not None
        with served.batcher.reserve() as predict:
            check_content_type(request.headers.get("content-type"))
            body = await _read_body(request)
            exchange.request = body.decode("utf-8", errors="replace")
            payload = await _offload(len(body), decode_body, body)
            exchange.client_request_id = client_request_id(payload)
            invocation = await _offload(len(body), parse_invocation, payload, served.schema)
            served.check_params(invocation.params)
            try:
                scored = await predict(invocation.frame, invocation.params)
            except InvocationError:  # the input does not conform to the model's schema
                raise
            except Exception as error:  # a valid request the model failed on: the server's fault
                log.error("model %s raised on a valid request", served.name, exc_info=True)
                raise InvocationError(
                    500, f"the model {served.name} failed: {type(error).__name__}: {error}"
                ) from None
        if served.traces_features:
            exchange.lookup = scored.lookup
        response = io.StringIO()
        predictions_to_json(scored.predictions, response)
        return response.getvalue()

    async def _load(self, name: str) -> Endpoint:
        """A persisted endpoint loaded at its first request, or the refusal saying why none serves:
        503 with the load error when its config cannot be served (a server fault), 400 when it has
        no config yet."""
        known = self.control_plane.names if self.control_plane else sorted(self.endpoints)
        if self.control_plane is not None and name in known:
            endpoint = await self.control_plane.endpoint(name)
            if endpoint is not None:
                return endpoint
            if (error := self.control_plane.load_error(name)) is not None:
                raise InvocationError(503, f"endpoint '{name}' cannot serve its config: {error}")
            raise InvocationError(400, f"endpoint '{name}' is not ready: no config serves yet ({API}/{name})")
        raise InvocationError(404, f"endpoint '{name}' does not exist here: {known}")

    def _authenticate(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), self._token):
            raise InvocationError(
                401, "this endpoint requires 'Authorization: Bearer <token>' with a valid token"
            )

    def _record(self, endpoint: Endpoint, exchange: _Exchange, status: int, response: str) -> None:
        if endpoint.table is None:
            return
        request_text, request_codes = logged_payload(exchange.request, REQUEST_TOO_LARGE)
        if exchange.lookup is not None and status == 200:
            response = _with_feature_lookup(response, exchange.lookup)
        response_text, response_codes = logged_payload(response, RESPONSE_TOO_LARGE)
        if status == 413:
            request_codes = [REQUEST_TOO_LARGE]
        endpoint.table.write(
            InferenceRecord(
                databricks_request_id=exchange.request_id,
                client_request_id=exchange.client_request_id,
                request_time=exchange.received,
                status_code=status,
                execution_duration_ms=round((time.perf_counter() - exchange.started) * 1000),
                request=request_text,
                response=response_text,
                served_entity_id=exchange.served.entity_id if exchange.served else None,
                requester=LOCAL_REQUESTER,
                logging_error_codes=request_codes + response_codes,
            )
        )


def create_app(
    endpoints: list[Endpoint] | None = None,
    *,
    token: str | None = None,
    control_plane: ControlPlane | None = None,
) -> Starlette:
    """The ASGI app serving `endpoints`, or with `control_plane` its endpoints and its
    serving-endpoints REST API; with `token`, every call needs `Authorization: Bearer <token>`."""
    service = EndpointService(endpoints or [], token, control_plane)
    invocation_paths = (
        "/serving-endpoints/{endpoint}/invocations",
        "/serving-endpoints/{endpoint}/served-models/{served}/invocations",
    )
    routes = [
        Route("/ping", service.ping, methods=["GET"]),
        Route("/health", service.health, methods=["GET"]),
        *(Route(path, service.invoke, methods=["POST"]) for path in invocation_paths),
    ]
    if control_plane is not None:
        # The SDK's WorkspaceClient asks for the host's metadata first (`get_host_metadata`,
        # databricks/sdk/oauth.py); the local host has none to give.
        routes.append(Route("/.well-known/databricks-config", service.host_metadata, methods=["GET"]))
        routes += control_plane.routes(service.authenticate_api)
    return Starlette(
        routes=routes, lifespan=service.lifespan, exception_handlers={HTTPException: _http_error}
    )


def _with_feature_lookup(response: str, lookup: LookupRecord) -> str:
    """The answer as the inference table logs it with feature tracing on: the client's
    `{"predictions": ...}` plus `"databricks_output": {"feature_lookup": {"columns", "data",
    "defaulted"}}` (the client does not receive it)."""
    output = json.dumps({"feature_lookup": lookup.to_dict()})
    return f'{response.removesuffix("}")}, "databricks_output": {output}}}'


def _served_model(endpoint: Endpoint, served: str | None) -> ServedModel:
    """The served entity asked for, or else the router's pick for this request."""
    if served is None:
        return endpoint.models[endpoint.router.choose()]
    if served not in endpoint.models:
        raise InvocationError(
            404, f"endpoint '{endpoint.name}' has no served model '{served}': {sorted(endpoint.models)}"
        )
    return endpoint.models[served]


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 when the declared or the streamed size exceeds the limit.

    A body over the limit is read and discarded (up to MAX_DRAIN_BYTES) before the refusal, so a
    client that sends it whole reads the 413. One announced with `Expect: 100-continue` is refused
    before it is sent: the server sends `100 Continue` only when the body is first read.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        waiting = request.headers.get("expect", "").lower() == "100-continue"
        if waiting or int(declared) > MAX_DRAIN_BYTES:
            raise _too_large(int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_DRAIN_BYTES:
                break
            if size <= MAX_REQUEST_BYTES:
                chunks.append(chunk)
    except ClientDisconnect:
        if size > MAX_REQUEST_BYTES:
            raise _too_large(size) from None
        raise bad_request("the client disconnected before sending the whole body") from None
    if size > MAX_REQUEST_BYTES:
        raise _too_large(size)
    return b"".join(chunks)


def _too_large(size: int) -> InvocationError:
    return InvocationError(413, f"the request body ({size} bytes or more) exceeds {MAX_REQUEST_BYTES} bytes")


async def _offload(size: int, function: Callable[..., T], *args: Any) -> T:
    """Run `function` inline for small bodies, in a worker thread for large ones."""
    if size <= _INLINE_PARSE_BYTES:
        return function(*args)
    return await asyncio.to_thread(function, *args)


async def _http_error(_request: Request, error: Exception) -> Response:
    """Routing errors (unknown path, wrong method) as JSON like every other error."""
    assert isinstance(error, HTTPException)
    refusal = InvocationError(error.status_code, str(error.detail))
    return JSONResponse(refusal.body(), status_code=error.status_code, headers=error.headers)


def _describe(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "served_entities": {
            name: {
                "served_entity_id": model.entity_id,
                "model": model.spec.entity_name,
                "version": model.spec.entity_version,
                "requests": model.batcher.stats.requests,
                "model_calls": model.batcher.stats.model_calls,
            }
            for name, model in endpoint.models.items()
        },
        "routes": {route.served_entity_name: route.traffic_percentage for route in endpoint.routes},
        "requests_in_flight": endpoint.in_flight,
        "inference_table": _describe_table(endpoint),
    }


def _describe_table(endpoint: Endpoint) -> dict[str, Any] | None:
    """The inference table's counters: records written, and any lost or dropped (with the last error)."""
    if endpoint.table is None:
        return None
    stats = endpoint.table.stats
    return {
        "table": endpoint.table.table,
        "written_records": stats.written,
        "failed_writes": stats.failed_writes,
        "lost_records": stats.lost,
        "dropped_records": stats.dropped,
        "last_error": stats.last_error,
    }
