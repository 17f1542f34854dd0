"""Unity Catalog three-level names and their one mapping onto the local metastore."""

from __future__ import annotations

import re

_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOCAL_SEPARATOR = "__"


class TableNameError(ValueError):
    """A table name that is not a valid `catalog.schema.table` name."""


def split_name(name: str) -> tuple[str, str, str]:
    """Split `catalog.schema.table` into its parts, or fail saying what a valid name looks like."""
    parts = name.split(".")
    if len(parts) != 3 or not all(_PART.match(part) for part in parts):
        raise TableNameError(
            f"'{name}' is not a three-level Unity Catalog name: expected catalog.schema.table "
            "with letters, digits and underscores in each part"
        )
    catalog, schema, table = parts
    if LOCAL_SEPARATOR in catalog or LOCAL_SEPARATOR in schema:
        raise TableNameError(
            f"'{name}': catalog and schema names may not contain '{LOCAL_SEPARATOR}' "
            "(reserved for the local metastore mapping)"
        )
    return catalog, schema, table


def local_database(catalog: str, schema: str) -> str:
    """The local Hive database standing for a Unity Catalog schema."""
    return f"{catalog}{LOCAL_SEPARATOR}{schema}".lower()


def to_local(name: str) -> str:
    """Map `catalog.schema.table` onto the local metastore's `catalog__schema.table`."""
    catalog, schema, table = split_name(name)
    return f"{local_database(catalog, schema)}.{table.lower()}"
