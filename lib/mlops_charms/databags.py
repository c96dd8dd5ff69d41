"""Reading and writing interface models in relation databags, the same way in every charm.

Values are JSON-encoded per field (as ``ops.Relation.save``/``load`` do). Reading a remote
databag never raises: a bad databag becomes a one-line problem for the caller's status.
"""

from __future__ import annotations

import json
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
    try:
        return relation.load(model, relation.app), None
    except (pydantic.ValidationError, ValueError, TypeError) as error:
        return None, f"invalid data from {relation.app.name}: {one_line(error)}"


def save_app_data(relation: ops.Relation, app: ops.Application, data: pydantic.BaseModel) -> bool:
    """Make this application's databag hold ``data``, writing only what differs.

    A field that is None is removed from the databag. Returns True when the databag changed.
    """
    databag = relation.data[app]
    wanted = {
        key: json.dumps(value)
        for key, value in data.model_dump(mode="json").items()
        if value is not None
    }
    changed = False
    for key in type(data).model_fields:
        if key not in wanted and key in databag:
            del databag[key]
            changed = True
    for key, value in wanted.items():
        if databag.get(key) != value:
            databag[key] = value
            changed = True
    return changed


def one_line(error: Exception) -> str:
    """A short, single-line description of a validation error."""
    if isinstance(error, pydantic.ValidationError):
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "databag"
        return f"{location}: {first['msg']}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
