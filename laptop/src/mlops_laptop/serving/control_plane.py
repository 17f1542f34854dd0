"""The local serving control plane: the Databricks serving-endpoints REST API the SDK deployer calls,
served by the same app as the invocations, over the endpoint state persisted in the target's state.

Routes (paths and methods of `ServingEndpointsAPI`, databricks/sdk/service/serving.py):
`GET|POST /api/2.0/serving-endpoints`, `GET|DELETE /api/2.0/serving-endpoints/{name}`,
`PUT .../{name}/config`, `PUT .../{name}/ai-gateway`, `PATCH .../{name}/tags`,
`GET|PATCH /api/2.0/permissions/serving-endpoints/{id}`. Bodies are parsed with the SDK's own
dataclasses and answers are theirs (`ServingEndpointDetailed`, ...); errors are Databricks' JSON
`{"error_code", "message"}` with its statuses.

A config update answers at once with `config_update: IN_PROGRESS` and the `pending_config`; the new
served entities load in the background (unchanged ones are kept as they are), each predicts its
model's input example, then the endpoint is swapped in one step: requests already routed finish on
the old served entities, which stop once drained. A failure ends `UPDATE_FAILED` with the previous
config still serving and the error in the pending config's served entity states.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    EndpointCoreConfigInput,
    EndpointCoreConfigOutput,
    EndpointCoreConfigSummary,
    EndpointPendingConfig,
    EndpointState,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    EndpointTag,
    EndpointTags,
    ListEndpointsResponse,
    PutAiGatewayResponse,
    Route,
    ServedEntityInput,
    ServedEntityOutput,
    ServedModelState,
    ServedModelStateDeployment,
    ServingEndpoint,
    ServingEndpointAccessControlRequest,
    ServingEndpointAccessControlResponse,
    ServingEndpointDetailed,
    ServingEndpointPermission,
    ServingEndpointPermissionLevel,
    ServingEndpointPermissions,
    TrafficConfig,
)
from databricks.sdk.service.serving import ServedEntitySpec as SdkServedEntitySpec
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from mlops_laptop.serving.endpoint import BatchSettings, Endpoint, ServedModel, table_writer
from mlops_laptop.serving.endpoint_state import (
    Discovery,
    EndpointRecord,
    delete_record,
    load_records,
    remove_discovery,
    save_record,
    write_discovery,
)
from mlops_laptop.serving.feature_lookup import FEATURE_TRACING_VARIABLE
from mlops_laptop.serving.inference_table import InferenceTableWriter
from mlops_template.serving.served_entities import served_entity_id
from mlops_template.serving.spec import (
    ENDPOINT_NAME_PATTERN,
    InferenceTableSpec,
    RouteSpec,
    ServedEntitySpec,
    served_entity_fields,
    served_entity_name,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

API = "/api/2.0/serving-endpoints"
PERMISSIONS_API = "/api/2.0/permissions/serving-endpoints"


class ApiError(Exception):
    """A refusal as Databricks answers it: HTTP status, error code, message."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def response(self) -> Response:
        return JSONResponse({"error_code": self.error_code, "message": self.message}, status_code=self.status)


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


@dataclass
class ServingSettings:
    """How the server serves: batching bounds, the inference tables' flush interval, and whether
    the persisted endpoints' models load before serving (`mlops serve`) or at their first request."""

    batching: BatchSettings = field(default_factory=BatchSettings)
    table_flush_seconds: float = 1.0
    preload: bool = True


class ControlPlane:
    """The endpoints of one state directory: their records (persisted on every change) and the
    live `Endpoint` each serves, shared with the invocation handler through `live`."""

    def __init__(self, state_dir: Path, settings: ServingSettings, *, creator: str) -> None:
        self.state_dir = state_dir
        self.settings = settings
        self.creator = creator
        self.live: dict[str, Endpoint] = {}
        self._records = {record.name: record for record in load_records(state_dir)}
        self._updates: dict[str, asyncio.Task[None]] = {}
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._load_errors: dict[str, str] = {}  # why a persisted config does not serve
        self._retiring: set[Endpoint] = set()  # replaced or deleted, draining
        self._background: set[asyncio.Task[None]] = set()  # retirements and table closes
        self.discovery: Discovery | None = None  # written while serving (`mlops serve`)

    @property
    def names(self) -> list[str]:
        return sorted(self._records)

    def preload(self) -> None:
        """Load the models of every endpoint that serves a config, before serving starts. An
        endpoint whose models no longer load is logged and served as not ready."""
        for record in self._records.values():
            if record.endpoint.config is None:
                continue
            try:
                self.live[record.name] = self._build(record)
            except Exception as error:  # whatever fails, the other endpoints still serve
                self._load_failed(record, error)

    async def start(self) -> None:
        """Start the preloaded endpoints' batchers and table writers on the serving event loop;
        then announce the server in the discovery file, if any (removed first thing at `stop`)."""
        for endpoint in self.live.values():
            endpoint.start()
        if self.discovery is not None:
            write_discovery(self.state_dir, self.discovery)

    async def stop(self) -> None:
        """Cancel updates in progress (the old config keeps being recorded), stop every endpoint
        and flush the tables."""
        if self.discovery is not None:
            remove_discovery(self.state_dir, self.discovery.pid)
        for task in [*self._updates.values(), *self._loads.values()]:
            task.cancel()
        await asyncio.gather(*self._updates.values(), *self._loads.values(), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        for name in list(self.live):
            await _retire(self.live.pop(name), keep=set(), close_table=True)

    async def endpoint(self, name: str) -> Endpoint | None:
        """The live endpoint `name`, loading a persisted one at its first request (when not
        preloaded); None when no config serves under that name."""
        if name in self.live:
            return self.live[name]
        record = self._records.get(name)
        if record is None or record.endpoint.config is None or self.settings.preload:
            return None
        if name not in self._loads:
            self._loads[name] = asyncio.get_running_loop().create_task(self._load_live(record))
        await asyncio.shield(self._loads[name])
        return self.live.get(name)

    def load_error(self, name: str) -> str | None:
        """Why the persisted config of `name` does not serve (its models failed to load), if so."""
        return self._load_errors.get(name)

    def routes(self, authenticate: Callable[[Request], None]) -> list[HttpRoute]:
        """The REST routes, each behind `authenticate` (raises `ApiError` to refuse)."""

        def route(path: str, handler: Callable[..., Awaitable[Any]], method: str) -> HttpRoute:
            async def endpoint(request: Request) -> Response:
                try:
                    authenticate(request)
                    return JSONResponse(await handler(request))
                except ApiError as error:
                    log.warning("%s %s -> %d %s", method, request.url.path, error.status, error.message)
                    return error.response()

            return HttpRoute(path, endpoint, methods=[method])

        return [
            route(API, self._list, "GET"),
            route(API, self._create, "POST"),
            route(API + "/{name}", self._get, "GET"),
            route(API + "/{name}", self._delete, "DELETE"),
            route(API + "/{name}/config", self._update_config, "PUT"),
            route(API + "/{name}/ai-gateway", self._put_ai_gateway, "PUT"),
            route(API + "/{name}/tags", self._patch_tags, "PATCH"),
            route(PERMISSIONS_API + "/{id}", self._get_permissions, "GET"),
            route(PERMISSIONS_API + "/{id}", self._update_permissions, "PATCH"),
        ]

    # -- handlers ------------------------------------------------------------------------------

    async def _list(self, _request: Request) -> dict[str, Any]:
        return ListEndpointsResponse(
            endpoints=[_summary(r.endpoint) for r in self._records.values()]
        ).as_dict()

    async def _get(self, request: Request) -> dict[str, Any]:
        return self._record(request).endpoint.as_dict()

    async def _create(self, request: Request) -> dict[str, Any]:
        body = await _body(request)
        name = body.get("name")
        if not isinstance(name, str) or not ENDPOINT_NAME_PATTERN.fullmatch(name):
            raise invalid(
                f"endpoint name {name!r} is invalid: it can consist of alphanumeric characters, dashes "
                "and underscores (at most 63)"
            )
        if name in self._records:
            raise ApiError(409, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists.")
        if "config" not in body:
            raise invalid("config is required to serve a registered model")
        entities, routes = _parse_config(_parsed(EndpointCoreConfigInput, body["config"]))
        gateway = _parsed(AiGatewayConfig, body["ai_gateway"]) if "ai_gateway" in body else None
        if gateway is not None:
            _table_spec(name, gateway.inference_table_config)  # refuse a bad table before creating
        tags = [_tag(tag) for tag in body.get("tags") or []]
        now = _now_ms()
        endpoint = ServingEndpointDetailed(
            name=name,
            id=uuid.uuid4().hex,
            creator=self.creator,
            creation_timestamp=now,
            last_updated_timestamp=now,
            ai_gateway=gateway,
            tags=tags or None,
            state=EndpointState(
                ready=EndpointStateReady.NOT_READY, config_update=EndpointStateConfigUpdate.NOT_UPDATING
            ),
        )
        creator_grant = ServingEndpointAccessControlResponse(
            user_name=self.creator,
            all_permissions=[
                ServingEndpointPermission(
                    permission_level=ServingEndpointPermissionLevel.CAN_MANAGE, inherited=False
                )
            ],
        )
        record = EndpointRecord(endpoint, [creator_grant])
        self._records[name] = record
        log.info("endpoint %s created", name)
        self._start_update(record, entities, routes)
        return record.endpoint.as_dict()

    async def _delete(self, request: Request) -> dict[str, Any]:
        record = self._record(request)
        if (task := self._updates.pop(record.name, None)) is not None:
            task.cancel()
        del self._records[record.name]
        self._load_errors.pop(record.name, None)
        delete_record(self.state_dir, record.name)
        if (live := self.live.pop(record.name, None)) is not None:
            self._retire_later(live, keep=set(), close_table=True)
        log.info("endpoint %s deleted", record.name)
        return {}

    # The handlers below read the body first, then look the endpoint up, check and change it with
    # no await in between: a DELETE or an update meanwhile is seen, never undone.

    async def _update_config(self, request: Request) -> dict[str, Any]:
        body = await _body(request)
        record = self._record(request)
        if _state(record).config_update == EndpointStateConfigUpdate.IN_PROGRESS:
            raise ApiError(
                409,
                "RESOURCE_CONFLICT",
                f"Endpoint {record.name} is currently updating. Wait for the update to complete.",
            )
        entities, routes = _parse_config(_parsed(EndpointCoreConfigInput, body))
        self._start_update(record, entities, routes)
        return record.endpoint.as_dict()

    async def _put_ai_gateway(self, request: Request) -> dict[str, Any]:
        body = await _body(request)
        record = self._record(request)
        gateway = _parsed(AiGatewayConfig, body)
        current = record.endpoint.ai_gateway.inference_table_config if record.endpoint.ai_gateway else None
        wanted = _table_spec(record.name, gateway.inference_table_config)
        before = _table_spec(record.name, current)
        if before and wanted and before.payload_table != wanted.payload_table:
            raise invalid(
                f"the inference table of {record.name} is enabled at {before.payload_table}: disable it "
                "before enabling it at another location"
            )
        record.endpoint.ai_gateway = gateway
        self._save(record)
        live = self.live.get(record.name)
        old_table = live.table if live else None
        if live is not None and (old_table.table if old_table else None) != (
            wanted.payload_table if wanted else None
        ):
            live.table = self._writer(wanted)  # requests from now on are recorded there
            if live.table is not None:
                live.table.start()
            if old_table is not None:  # retiring endpoints may still record into it
                holders = [endpoint for endpoint in self._retiring if endpoint.table is old_table]
                self._spawn(_close_when_drained(old_table, holders))
        return PutAiGatewayResponse.from_dict(gateway.as_dict()).as_dict()

    async def _patch_tags(self, request: Request) -> dict[str, Any]:
        body = await _body(request)
        record = self._record(request)
        deleted = set(body.get("delete_tags") or [])
        tags = {tag.key: tag for tag in record.endpoint.tags or [] if tag.key not in deleted}
        tags |= {tag.key: tag for tag in (_tag(t) for t in body.get("add_tags") or [])}
        record.endpoint.tags = list(tags.values()) or None
        self._save(record)
        return EndpointTags(tags=list(tags.values())).as_dict()

    async def _get_permissions(self, request: Request) -> dict[str, Any]:
        return _permissions(self._record_by_id(request))

    async def _update_permissions(self, request: Request) -> dict[str, Any]:
        """Add or change the given principals' direct grants and keep every other (PATCH semantics:
        `ServingEndpointsAPI.update_permissions`; PUT `set_permissions` would replace them all)."""
        body = await _body(request)
        record = self._record_by_id(request)
        for entry in body.get("access_control_list") or []:
            grant = _parsed(ServingEndpointAccessControlRequest, entry)
            principals = _principal(grant)
            if len(principals) != 1 or grant.permission_level is None:
                raise invalid(
                    f"each access control entry needs one principal and a permission level "
                    f"({', '.join(level.value for level in ServingEndpointPermissionLevel)}): got {entry}"
                )
            record.acl = [e for e in record.acl if _principal(e) != principals] + [
                ServingEndpointAccessControlResponse(
                    **principals,
                    all_permissions=[
                        ServingEndpointPermission(permission_level=grant.permission_level, inherited=False)
                    ],
                )
            ]
        self._save(record)
        return _permissions(record)

    # -- updates -------------------------------------------------------------------------------

    def _start_update(
        self, record: EndpointRecord, entities: list[ServedEntitySpec], routes: list[RouteSpec]
    ) -> None:
        """Record the pending config and apply it in the background."""
        current = record.endpoint.config
        record.endpoint.pending_config = EndpointPendingConfig(
            config_version=(current.config_version or 0) + 1 if current else 1,
            served_entities=[
                _entity_output(e, self.creator, ServedModelStateDeployment.DEPLOYMENT_CREATING)
                for e in entities
            ],
            traffic_config=_traffic(routes),
            start_time=_now_ms(),
        )
        _state(record).config_update = EndpointStateConfigUpdate.IN_PROGRESS
        record.endpoint.last_updated_timestamp = _now_ms()
        self._save(record)
        task = asyncio.get_running_loop().create_task(self._apply(record, entities, routes))
        self._updates[record.name] = task
        task.add_done_callback(
            lambda done: (
                self._updates.pop(record.name, None) if self._updates.get(record.name) is done else None
            )
        )

    async def _apply(
        self, record: EndpointRecord, entities: list[ServedEntitySpec], routes: list[RouteSpec]
    ) -> None:
        name = record.name
        if name in self._loads:  # a first request is loading the current config: reuse it
            await asyncio.gather(self._loads[name], return_exceptions=True)
        current = self.live.get(name)
        kept = {m.entity_id: m for m in current.models.values()} if current else {}
        try:
            models = await asyncio.to_thread(self._load_models, name, entities, kept)
        except Exception as error:  # whatever fails loading or checking, the old config keeps serving
            self._fail(record, f"{type(error).__name__}: {error}")
            return
        current = self.live.get(name)  # unchanged: one update at a time, and loads only fill gaps
        table = current.table if current else self._writer(_table_spec(name, _gateway_table(record)))
        endpoint = Endpoint(name, models, routes, table)
        for model in models.values():
            if model.entity_id not in kept:
                model.batcher.start()
        if current is None and table is not None:
            table.start()
        self.live[name] = endpoint  # the swap: requests from now on meet the new served entities
        self._load_errors.pop(name, None)
        pending = record.endpoint.pending_config
        assert pending is not None
        for entity in pending.served_entities or []:
            entity.state = ServedModelState(deployment=ServedModelStateDeployment.DEPLOYMENT_READY)
        record.endpoint.config = EndpointCoreConfigOutput(
            config_version=pending.config_version,
            served_entities=pending.served_entities,
            traffic_config=pending.traffic_config,
        )
        record.endpoint.pending_config = None
        record.endpoint.state = EndpointState(
            ready=EndpointStateReady.READY, config_update=EndpointStateConfigUpdate.NOT_UPDATING
        )
        self._save(record)
        log.info(
            "endpoint %s serves config %s: %s",
            name,
            pending.config_version,
            ", ".join(f"{r.served_entity_name} {r.traffic_percentage}%" for r in routes),
        )
        if current is not None:
            self._retire_later(current, keep={id(m) for m in models.values()}, close_table=False)

    def _fail(self, record: EndpointRecord, message: str) -> None:
        log.error(
            "endpoint %s: the config update failed, the previous config keeps serving: %s",
            record.name,
            message,
        )
        pending = record.endpoint.pending_config
        for entity in pending.served_entities or [] if pending else []:
            entity.state = ServedModelState(
                deployment=ServedModelStateDeployment.DEPLOYMENT_FAILED, deployment_state_message=message
            )
        _state(record).config_update = EndpointStateConfigUpdate.UPDATE_FAILED
        self._save(record)

    def _load_models(
        self, name: str, entities: list[ServedEntitySpec], kept: dict[str, ServedModel]
    ) -> dict[str, ServedModel]:
        """The served models of a config: unchanged ones as they serve, new ones loaded and checked
        with their input example (in a worker thread)."""
        models = {}
        for entity in entities:
            if (entity_id := served_entity_id(name, entity)) in kept:
                models[entity.name] = kept[entity_id]
                continue
            model = ServedModel.load(name, entity, self.settings.batching, self.state_dir)
            rows = model.check_example()
            log.info("endpoint %s: %s answered its input example (%d rows)", name, entity.name, rows)
            models[entity.name] = model
        return models

    def _build(self, record: EndpointRecord) -> Endpoint:
        """The endpoint serving the record's config, loaded and checked (not started)."""
        entities, routes = _served(record)
        models = self._load_models(record.name, entities, {})
        return Endpoint(
            record.name, models, routes, self._writer(_table_spec(record.name, _gateway_table(record)))
        )

    async def _load_live(self, record: EndpointRecord) -> None:
        try:
            endpoint = await asyncio.to_thread(self._build, record)
        except Exception as error:  # recorded: requests get a 503 saying why, the next one retries
            self._load_failed(record, error)
            return
        finally:
            self._loads.pop(record.name, None)
        if record.name in self.live or self._records.get(record.name) is not record:
            return  # an update or a delete came first
        endpoint.start()
        self.live[record.name] = endpoint
        self._load_errors.pop(record.name, None)

    def _load_failed(self, record: EndpointRecord, error: Exception) -> None:
        message = f"{type(error).__name__}: {error}"
        log.error("endpoint %s cannot serve its persisted config: %s", record.name, message)
        self._load_errors[record.name] = message
        _state(record).ready = EndpointStateReady.NOT_READY

    def _retire_later(self, endpoint: Endpoint, *, keep: set[int], close_table: bool) -> None:
        self._retiring.add(endpoint)
        task = self._spawn(_retire(endpoint, keep=keep, close_table=close_table))
        task.add_done_callback(lambda _done: self._retiring.discard(endpoint))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` in the background; `stop` awaits it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _writer(self, table: InferenceTableSpec | None):
        if table is None:
            return None
        return table_writer(
            self.state_dir, table.payload_table, flush_seconds=self.settings.table_flush_seconds
        )

    def _save(self, record: EndpointRecord) -> None:
        if self._records.get(record.name) is record:
            save_record(self.state_dir, record)

    def _record(self, request: Request) -> EndpointRecord:
        name = request.path_params["name"]
        if name not in self._records:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Endpoint with name '{name}' does not exist.")
        return self._records[name]

    def _record_by_id(self, request: Request) -> EndpointRecord:
        endpoint_id = request.path_params["id"]
        for record in self._records.values():
            if record.endpoint.id == endpoint_id:
                return record
        raise ApiError(
            404, "RESOURCE_DOES_NOT_EXIST", f"Serving endpoint with id '{endpoint_id}' does not exist."
        )


async def _retire(endpoint: Endpoint, *, keep: set[int], close_table: bool) -> None:
    """Stop the endpoint's served models (but those in `keep`) once they answered what was routed
    to them and every request routed to the endpoint is recorded; with `close_table`, then flush and
    close its table writer."""
    await asyncio.gather(*(m.batcher.drain() for m in endpoint.models.values() if id(m) not in keep))
    await endpoint.drained()
    if close_table and endpoint.table is not None:
        await asyncio.to_thread(endpoint.table.close)


async def _close_when_drained(table: InferenceTableWriter, holders: list[Endpoint]) -> None:
    """Flush and close `table` once the endpoints still recording into it are drained."""
    await asyncio.gather(*(endpoint.drained() for endpoint in holders))
    await asyncio.to_thread(table.close)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as error:
        raise ApiError(400, "MALFORMED_REQUEST", f"the request body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", "the request body must be a JSON object")
    return body


def _parsed(cls: type[T], data: Any) -> T:
    """`data` read by the SDK dataclass `cls`; a malformed value is the client's error."""
    try:
        return cls.from_dict(data)  # type: ignore[attr-defined]
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ApiError(
            400, "MALFORMED_REQUEST", f"{cls.__name__} could not be read from {data!r}: {error}"
        ) from None


def _parse_config(config: EndpointCoreConfigInput) -> tuple[list[ServedEntitySpec], list[RouteSpec]]:
    """The served entities and routes of a config, checked as Databricks checks them: unique served
    entity names, routes naming each entity once and summing to 100 (`TrafficConfig`); fields the
    laptop would otherwise ignore are refused (`_refuse_unemulated`)."""
    _refuse_unemulated(config)
    if not config.served_entities:
        raise invalid("the config must have at least one served entity (served_entities)")
    entities = [_entity_spec(entity) for entity in config.served_entities]
    names = [entity.name for entity in entities]
    if len(set(names)) != len(names):
        raise invalid(f"served entity names must be unique across the endpoint, got {names}")
    routes = config.traffic_config.routes if config.traffic_config and config.traffic_config.routes else None
    if routes is None:
        if len(entities) > 1:
            raise invalid(f"traffic_config must route traffic among the served entities {names}")
        return entities, [RouteSpec(served_entity_name=names[0], traffic_percentage=100)]
    specs = []
    for route in routes:
        if route.served_entity_name not in names:
            raise invalid(f"the route to '{route.served_entity_name}' names no served entity of {names}")
        if not 0 <= route.traffic_percentage <= 100:
            raise invalid(f"traffic_percentage must be within 0..100, got {route.traffic_percentage}")
        specs.append(
            RouteSpec(
                served_entity_name=route.served_entity_name, traffic_percentage=route.traffic_percentage
            )
        )
    routed = [route.served_entity_name for route in specs]
    if sorted(routed) != sorted(names):
        raise invalid(f"the traffic routes {routed} must name each served entity {names} exactly once")
    total = sum(route.traffic_percentage for route in specs)
    if total != 100:
        raise invalid(f"the traffic percentages of the routes must sum to 100, got {total}")
    return entities, specs


def _refuse_unemulated(config: EndpointCoreConfigInput) -> None:
    """Refuse what the laptop would silently ignore: legacy inference tables (`auto_capture_config`:
    "Starting February 20, 2026, legacy inference tables can not be enabled on new or existing model
    serving endpoints", docs "Enable inference tables on model serving endpoints using the API",
    docs.databricks.com/machine-learning/model-serving/enable-model-serving-inference-tables.html),
    the deprecated `served_models`, `workload_size` with provisioned concurrency ("Do not use if
    min_provisioned_concurrency and max_provisioned_concurrency are specified", `ServedEntityInput`)
    and served entity settings it cannot honour (GPU workloads, environment variables but
    `ENABLE_FEATURE_TRACING`, instance profiles, external models, provisioned throughput)."""
    if config.auto_capture_config is not None:
        raise invalid(
            "auto_capture_config (legacy inference tables) can no longer be enabled on Databricks: "
            "enable the AI gateway's inference_table_config instead (PUT .../ai-gateway)"
        )
    if config.served_models:
        raise invalid("served_models is deprecated and not served here: use served_entities")
    for entity in config.served_entities or []:
        label = entity.name or entity.entity_name
        concurrency = entity.min_provisioned_concurrency, entity.max_provisioned_concurrency
        if entity.workload_size and any(value is not None for value in concurrency):
            raise invalid(
                f"served entity {label}: workload_size cannot be combined with "
                "min_provisioned_concurrency / max_provisioned_concurrency: give one or the other"
            )
        workload_type = entity.workload_type.value if entity.workload_type else "CPU"
        variables = entity.environment_vars or {}
        tracing = variables.get(FEATURE_TRACING_VARIABLE)
        if tracing is not None and tracing not in ("true", "false"):
            raise invalid(
                f"served entity {label}: environment variable {FEATURE_TRACING_VARIABLE} must be 'true' or "
                f"'false', got {tracing!r}"
            )
        others = sorted(set(variables) - {FEATURE_TRACING_VARIABLE})
        unemulated = {
            "workload_type": not workload_type.startswith("CPU"),
            "environment_vars": bool(others),
            "instance_profile_arn": entity.instance_profile_arn is not None,
            "external_model": entity.external_model is not None,
            "provisioned_model_units": entity.provisioned_model_units is not None,
            "min_provisioned_throughput": entity.min_provisioned_throughput is not None,
            "max_provisioned_throughput": entity.max_provisioned_throughput is not None,
        }
        if fields := [name for name, given in unemulated.items() if given]:
            detail = f" {workload_type}" if unemulated["workload_type"] else ""
            if others:
                detail += f" {others} (of the environment variables it honours {FEATURE_TRACING_VARIABLE})"
            raise invalid(
                f"served entity {label}: the laptop does not emulate {', '.join(fields)}{detail} (it "
                "serves registered models on the local CPU): remove it from the local target's config"
            )


def _entity_spec(entity: ServedEntityInput | ServedEntityOutput) -> ServedEntitySpec:
    """A registered model version to serve; its name defaults to `<model>-<version>`
    (`ServedEntityInput.name`)."""
    if not entity.entity_name or not entity.entity_version:
        raise invalid(
            f"a served entity needs entity_name and entity_version (a registered model version): {entity}"
        )
    try:
        return ServedEntitySpec(
            name=entity.name or served_entity_name(entity.entity_name, entity.entity_version),
            entity_name=entity.entity_name,
            entity_version=entity.entity_version,
            workload_size=entity.workload_size or "Small",
            scale_to_zero=bool(entity.scale_to_zero_enabled),
            environment_vars=entity.environment_vars or {},
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise invalid(f"served entity {entity.name or entity.entity_name}: {problems}") from None


def _entity_output(
    entity: ServedEntitySpec, creator: str, deployment: ServedModelStateDeployment
) -> ServedEntityOutput:
    return ServedEntityOutput(
        **served_entity_fields(entity),
        creator=creator,
        creation_timestamp=_now_ms(),
        state=ServedModelState(deployment=deployment),
    )


def _served(record: EndpointRecord) -> tuple[list[ServedEntitySpec], list[RouteSpec]]:
    """The served entities and routes of the record's current config."""
    config = record.endpoint.config
    assert config is not None
    routes = config.traffic_config.routes if config.traffic_config else None
    return [_entity_spec(e) for e in config.served_entities or []], [
        RouteSpec(served_entity_name=str(r.served_entity_name), traffic_percentage=r.traffic_percentage)
        for r in routes or []
    ]


def _traffic(routes: list[RouteSpec]) -> TrafficConfig:
    return TrafficConfig(
        routes=[
            Route(served_entity_name=r.served_entity_name, traffic_percentage=r.traffic_percentage)
            for r in routes
        ]
    )


def _gateway_table(record: EndpointRecord) -> AiGatewayInferenceTableConfig | None:
    gateway = record.endpoint.ai_gateway
    return gateway.inference_table_config if gateway else None


def _table_spec(endpoint_name: str, table: AiGatewayInferenceTableConfig | None) -> InferenceTableSpec | None:
    """The enabled inference table, `<catalog>.<schema>.<prefix>_payload` (the prefix defaults to
    the endpoint name, `AiGatewayInferenceTableConfig`); None when off."""
    if table is None or not table.enabled:
        return None
    if not table.catalog_name or not table.schema_name:
        raise invalid("an enabled inference table needs catalog_name and schema_name")
    try:
        return InferenceTableSpec(
            enabled=True,
            catalog_name=table.catalog_name,
            schema_name=table.schema_name,
            table_name_prefix=table.table_name_prefix or endpoint_name,
        )
    except ValidationError as error:
        raise invalid(f"the inference table name is invalid: {error.errors()[0]['msg']}") from None


def _tag(data: Any) -> EndpointTag:
    tag = _parsed(EndpointTag, data)
    if not tag.key:
        raise invalid(f"a tag needs a key: {data!r}")
    return tag


def _state(record: EndpointRecord) -> EndpointState:
    if record.endpoint.state is None:
        record.endpoint.state = EndpointState()
    return record.endpoint.state


def _summary(endpoint: ServingEndpointDetailed) -> ServingEndpoint:
    """The endpoint as `list` describes it (`ServingEndpoint`)."""
    entities = endpoint.config.served_entities or [] if endpoint.config else []
    return ServingEndpoint(
        name=endpoint.name,
        id=endpoint.id,
        creator=endpoint.creator,
        creation_timestamp=endpoint.creation_timestamp,
        last_updated_timestamp=endpoint.last_updated_timestamp,
        state=endpoint.state,
        tags=endpoint.tags,
        ai_gateway=endpoint.ai_gateway,
        config=EndpointCoreConfigSummary(
            served_entities=[
                SdkServedEntitySpec(name=e.name, entity_name=e.entity_name, entity_version=e.entity_version)
                for e in entities
            ]
        ),
    )


def _principal(
    entry: ServingEndpointAccessControlRequest | ServingEndpointAccessControlResponse,
) -> dict[str, str]:
    """The principal an access control entry names (one of user, group, service principal)."""
    return {
        key: value
        for key, value in (
            ("user_name", entry.user_name),
            ("group_name", entry.group_name),
            ("service_principal_name", entry.service_principal_name),
        )
        if value
    }


def _permissions(record: EndpointRecord) -> dict[str, Any]:
    return ServingEndpointPermissions(
        object_id=f"/serving-endpoints/{record.endpoint.id}",
        object_type="serving-endpoint",
        access_control_list=record.acl,
    ).as_dict()


def _now_ms() -> int:
    return int(time.time() * 1000)
