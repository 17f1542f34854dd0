"""What every task entry point shares: argv (wheel tasks) or widgets (notebook tasks) parsed into a
typed config, logging, the platform."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mlops_template.platform import Platform, get_platform
from mlops_template.platform.names import TableNameError, split_name

log = logging.getLogger(__name__)


class TaskConfig(BaseModel):
    """Base of task configs: `--some-name=value` arguments fill field `some_name`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


# A timestamp parameter where "" (an unset job parameter) means unbounded.
OptionalTimestamp = Annotated[dt.datetime | None, BeforeValidator(_empty_is_none)]


def check_schema_name(name: str) -> str:
    """`name` if it is a two-level `catalog.schema` name, else a clear error."""
    try:
        split_name(f"{name}.table")
    except TableNameError:
        raise ValueError(
            f"'{name}' is not a two-level Unity Catalog schema name: expected catalog.schema with "
            "letters, digits and underscores in each part"
        ) from None
    return name


SchemaName = Annotated[str, AfterValidator(check_schema_name)]
# Where a served model gets the features its lookups produce (bundle variable `serving_features`):
# `lookup` from the online store, `request` sent by the client (no online store, e.g. Free Edition).
ServingFeatures = Literal["lookup", "request"]


class PipelineTaskConfig(TaskConfig):
    """A pipeline task: `--schema=catalog.schema` and the problem spec name the tables it uses."""

    # `schema_` in Python: pydantic's BaseModel has a `schema` attribute.
    schema_: SchemaName = Field(alias="schema")


class TaskArgumentError(ValueError):
    """The task's parameters do not match its config."""


ConfigT = TypeVar("ConfigT", bound=TaskConfig)


def parse_arguments(argv: Sequence[str]) -> dict[str, str]:
    """`--name=value` or `--name value` pairs into a dict keyed by snake_case names."""
    values: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--") or arg == "--":
            raise TaskArgumentError(f"unexpected argument '{arg}': expected --name=value")
        name, has_value, value = arg[2:].partition("=")
        if not has_value:
            if not args:
                raise TaskArgumentError(f"argument --{name} has no value")
            value = args.pop(0)
        key = name.replace("-", "_")
        if key in values:
            raise TaskArgumentError(f"argument --{name} given twice")
        values[key] = value
    return values


def build_config(config_type: type[ConfigT], argv: Sequence[str]) -> ConfigT:
    """Parse argv into the task's config; the error lists each bad or unknown argument."""
    return _validated(config_type, parse_arguments(argv), "parameters", _as_argument)


def _as_argument(field: str) -> str:
    return "--" + field.replace("_", "-")


def _validated(
    config_type: type[ConfigT], values: dict[str, str], what: str, spelled: Callable[[str], str]
) -> ConfigT:
    """The config, or a TaskArgumentError listing each bad value by its name as the job `spelled` it."""
    try:
        return config_type.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{spelled('.'.join(str(p) for p in e['loc']))}: {e['msg']}" for e in error.errors()
        )
        raise TaskArgumentError(f"bad {what} for {config_type.__name__}: {problems}") from None


class NotebookWidgets(Protocol):
    """The part of `dbutils.widgets` a notebook task reads its parameters with."""

    def text(self, name: str, defaultValue: str, label: str | None = None) -> None: ...

    def get(self, name: str) -> str: ...


def config_from_widgets(config_type: type[ConfigT], widgets: NotebookWidgets) -> ConfigT:
    """A notebook task's config: one text widget per field ("" or absent: the field's default)."""
    names = [field.alias or name for name, field in config_type.model_fields.items()]
    for name in names:
        widgets.text(name, "")
    values = {name: value for name in names if (value := widgets.get(name)) != ""}
    return _validated(config_type, values, "notebook parameters", str)


def task_entry_point(
    config_type: type[ConfigT], run: Callable[[Platform, ConfigT], None]
) -> Callable[[], None]:
    """A `python_wheel_task` entry point: reads sys.argv like Databricks passes it."""

    def main() -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        config = build_config(config_type, sys.argv[1:])
        log.debug("%s with %s", config_type.__name__, config.model_dump())
        run(get_platform(), config)

    main.__doc__ = f"Entry point of the task configured by {config_type.__name__}."
    return main
