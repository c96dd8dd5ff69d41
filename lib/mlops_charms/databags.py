"""Reading and writing interface models in relation databags, the same way in every charm.

Values are JSON-encoded per field (as ``ops.Relation.save``/``load`` do). Reading a remote
databag never raises: a bad databag becomes a one-line problem for the caller's status.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import TypeVar

import ops
import pydantic

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


def load_remote_app_data(
    relation: ops.Relation, model: type[ModelT]
) -> tuple[ModelT | None, str | None]:
    """The remote application's databag as ``model``, or None and a one-line problem."""
    if relation.app is None:
        return None, None
    return load_app_data(relation, relation.app, model)


def load_app_data(
    relation: ops.Relation, app: ops.Application, model: type[ModelT]
) -> tuple[ModelT | None, str | None]:
    """``app``'s databag on ``relation`` as ``model``, or None and a one-line problem."""
    try:
        return relation.load(model, app), None
    except (pydantic.ValidationError, ValueError, TypeError) as error:
        return None, f"invalid data from {app.name}: {one_line(error)}"


def save_app_data(relation: ops.Relation, app: ops.Application, data: pydantic.BaseModel) -> bool:
    """Make this application's databag hold ``data``; see ``write_databag``."""
    return write_databag(relation.data[app], data)


def write_databag(databag: MutableMapping[str, str], data: pydantic.BaseModel) -> bool:
    """Make ``databag`` hold ``data``, writing only what differs.

    Keys are the fields' serialization aliases (or names). A field of the model that is None
    is removed from the databag; keys the model does not own are left alone. Returns True when
    the databag changed.
    """
    wanted = {
        key: json.dumps(value)
        for key, value in data.model_dump(mode="json", by_alias=True, exclude_none=True).items()
    }
    owned = {field.serialization_alias or name for name, field in type(data).model_fields.items()}
    changes = {key: value for key, value in wanted.items() if databag.get(key) != value}
    # An empty value deletes the key (ops' convention for relation data).
    changes.update({key: "" for key in owned - wanted.keys() if key in databag})
    if changes:
        databag.update(changes)
    return bool(changes)


def one_line(error: Exception) -> str:
    """A short, single-line description of a validation error."""
    if isinstance(error, pydantic.ValidationError):
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "databag"
        return f"{location}: {first['msg']}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
