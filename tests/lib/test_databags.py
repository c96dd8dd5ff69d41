"""Interface models in relation databags: reading never raises, writing writes only changes."""

from __future__ import annotations

import json

import ops
import pydantic
import pytest
from ops import testing

from mlops_charms.databags import (
    load_app_data,
    load_remote_app_data,
    one_line,
    save_app_data,
    write_databag,
)

META = {"name": "registry", "provides": {"dataset": {"interface": "dataset"}}}


class DatasetData(pydantic.BaseModel):
    """A databag as the dataset interface's models have it: every field optional."""

    model_config = pydantic.ConfigDict(populate_by_name=True)

    url: str | None = None
    port: int | None = None
    access: str | None = pydantic.Field(default=None, serialization_alias="access-mode")


@pytest.fixture
def ctx() -> testing.Context[ops.CharmBase]:
    return testing.Context(ops.CharmBase, meta=META)


def dataset_relation(**kwargs) -> testing.Relation:
    return testing.Relation("dataset", remote_app_name="trainer", **kwargs)


def load(ctx, relation: testing.Relation, *, own: bool = False, leader: bool = True):
    """``load_app_data`` of the remote application's databag, or this application's."""
    state = testing.State(leader=leader, relations={relation})
    with ctx(ctx.on.relation_changed(relation), state) as manager:
        live = manager.charm.model.get_relation("dataset")
        assert live is not None and live.app is not None
        app = manager.charm.app if own else live.app
        return load_app_data(live, app, DatasetData)


def test_remote_app_data_loads_into_the_model(ctx):
    relation = dataset_relation(remote_app_data={"url": '"http://registry:8080"', "port": "8080"})

    data, problem = load(ctx, relation)

    assert problem is None
    assert data == DatasetData(url="http://registry:8080", port=8080)


def test_this_apps_own_data_loads_from_its_side_of_the_relation(ctx):
    relation = dataset_relation(
        local_app_data={"url": '"http://mine:8080"'}, remote_app_data={"url": '"http://theirs"'}
    )

    data, problem = load(ctx, relation, own=True)

    assert problem is None
    assert data is not None and data.url == "http://mine:8080"


def test_invalid_field_is_a_one_line_problem_naming_app_and_field(ctx):
    relation = dataset_relation(remote_app_data={"port": '"eighty"'})

    data, problem = load(ctx, relation)

    assert data is None
    assert problem is not None
    assert problem.startswith("invalid data from trainer: port: ")
    assert "\n" not in problem


def test_value_that_is_not_json_is_a_problem_not_an_exception(ctx):
    relation = dataset_relation(remote_app_data={"url": "http://not-quoted"})

    data, problem = load(ctx, relation)

    assert data is None
    assert problem is not None and problem.startswith("invalid data from trainer: ")


def test_load_remote_app_data_reads_the_remote_application(ctx):
    relation = dataset_relation(remote_app_data={"port": "9000"})
    state = testing.State(leader=True, relations={relation})

    with ctx(ctx.on.relation_changed(relation), state) as manager:
        live = manager.charm.model.get_relation("dataset")
        assert live is not None
        data, problem = load_remote_app_data(live, DatasetData)

    assert (data, problem) == (DatasetData(port=9000), None)


def test_save_writes_only_what_differs_by_alias_and_removes_fields_now_none(ctx):
    relation = dataset_relation(
        local_app_data={"url": '"http://old"', "port": "8080", "foreign": "kept"}
    )
    state = testing.State(leader=True, relations={relation})

    with ctx(ctx.on.relation_changed(relation), state) as manager:
        live = manager.charm.model.get_relation("dataset")
        assert live is not None
        changed = save_app_data(
            live, manager.charm.app, DatasetData(url="http://new", access="write")
        )
        unchanged = save_app_data(
            live, manager.charm.app, DatasetData(url="http://new", access="write")
        )
        out = manager.run()

    assert (changed, unchanged) == (True, False)
    assert out.get_relation(relation.id).local_app_data == {
        "url": '"http://new"',
        "access-mode": '"write"',
        "foreign": "kept",
    }


def test_write_databag_leaves_an_equal_databag_untouched():
    databag = {"url": json.dumps("http://x"), "port": "1"}

    assert write_databag(databag, DatasetData(url="http://x", port=1)) is False
    assert databag == {"url": '"http://x"', "port": "1"}


def test_one_line_describes_an_error_without_its_input():
    with pytest.raises(pydantic.ValidationError) as error:
        DatasetData.model_validate({"port": "s3cr3t"})

    assert one_line(error.value).startswith("port: ")
    assert "s3cr3t" not in one_line(error.value)
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(ValueError("")) == "ValueError"
