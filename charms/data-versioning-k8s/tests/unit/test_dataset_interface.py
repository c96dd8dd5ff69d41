"""The mlops_dataset models: every field optional, bad remote data is a problem, not a raise."""

from __future__ import annotations

import json

import pytest
from ops import testing

from mlops_charms import databags
from mlops_charms.dataset import DatasetProviderData, DatasetRequirerData


def test_empty_databags_are_valid():
    assert DatasetProviderData().version_to_use is None
    assert DatasetRequirerData().access is None


def test_pinned_version_wins_over_latest():
    data = DatasetProviderData(latest_version="v5", pinned_version="v2")
    assert data.version_to_use == "v2"


@pytest.mark.parametrize(
    "fields",
    [
        {"latest_version": "5"},
        {"pinned_version": "v0"},
        {"remote_url": "http://not-s3"},
        {"access": "admin"},
    ],
)
def test_bad_provider_fields_are_rejected(fields):
    with pytest.raises(ValueError):
        DatasetProviderData(**fields)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    data = DatasetProviderData.model_validate({"latest_version": "v1", "future_field": 1})
    assert data.latest_version == "v1"


@pytest.mark.parametrize(
    "databag",
    [{"access": json.dumps("admin")}, {"access": "{not json"}, {"access": json.dumps(3)}],
)
def test_bad_requirer_databag_becomes_a_problem(ctx, databag):
    relation = testing.Relation(
        "mlops-dataset", remote_app_name="training", remote_app_data=databag
    )
    state = testing.State(relations={relation}, containers={testing.Container("registry")})
    with ctx(ctx.on.update_status(), state) as manager:
        model_relation = manager.charm.model.get_relation("mlops-dataset", relation.id)
        assert model_relation is not None
        data, problem = databags.load_remote_app_data(model_relation, DatasetRequirerData)
    assert data is None
    assert problem is not None and problem.startswith("invalid data from training")
