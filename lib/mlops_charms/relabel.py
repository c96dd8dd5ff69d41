"""The ``mlops_relabel`` interface: items sent back to labelling, by reference.

Error analysis (training) finds misclassified items and worst slices and asks labelling to
label them again. Only references travel: item ids (paths in a dataset version), never data.

Provider (training) application databag:
    batches      a list of batches, each:
                   batch_id         unique per batch; labelling queues a batch once
                   items            item ids, as in the dataset version (``texts/0001.txt``)
                   reason           why they are sent back (``misclassified``, ``worst slice``…)
                   run_id           the training run that flagged them (MLflow run id)
                   dataset_version  the version the run trained on, ``vN``
                   project          the labelling project the items came from (optional)

Requirer (labelling) application databag (only ids the provider still offers):
    queued       the batch ids queued for re-labelling (an acknowledgement)
    failed       the batch ids that could not be queued (never retried; labelling says why)

Every field is optional on the wire and JSON-encoded (``Relation.save``/``load``). Reading
never raises: a bad databag becomes a one-line problem for the caller's status.
"""

from __future__ import annotations

import re

import pydantic

from mlops_charms.dataset import VersionName

MAX_ITEMS_PER_BATCH = 10_000
BATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class RelabelBatch(pydantic.BaseModel):
    """One batch of items to label again."""

    model_config = pydantic.ConfigDict(extra="ignore")

    batch_id: str | None = None
    items: list[str] | None = None
    reason: str | None = None
    run_id: str | None = None
    dataset_version: VersionName | None = None
    project: str | None = None

    @pydantic.field_validator("batch_id")
    @classmethod
    def _batch_id_is_usable(cls, value: str | None) -> str | None:
        if value is not None and not BATCH_ID_PATTERN.match(value):
            raise ValueError("must be 1-128 letters, digits, '.', '_', ':', '@' or '-'")
        return value

    @pydantic.field_validator("items")
    @classmethod
    def _items_are_references(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if len(value) > MAX_ITEMS_PER_BATCH:
            raise ValueError(f"at most {MAX_ITEMS_PER_BATCH} items per batch")
        if any(not item or item.startswith("/") or ".." in item.split("/") for item in value):
            raise ValueError("items must be relative paths inside a dataset version")
        return value


class RelabelProviderData(pydantic.BaseModel):
    """What error analysis (the training charm) publishes."""

    model_config = pydantic.ConfigDict(extra="ignore")

    batches: list[RelabelBatch] | None = None


class RelabelRequirerData(pydantic.BaseModel):
    """What labelling acknowledges."""

    model_config = pydantic.ConfigDict(extra="ignore")

    queued: list[str] | None = None
    failed: list[str] | None = None
