"""The ``mlops_approach`` interface: the stack's mode and its policy, pushed to every service.

The approach charm (provider) says whether the stack is model-centric (data pinned, the model
iterated) or data-centric (the model frozen, the data iterated), and the policy of that mode.
Each service (requirer) applies it and acknowledges the policy revision it has applied.

Provider (the approach charm) application databag:
    mode       ``model-centric`` or ``data-centric``
    revision   the policy's revision: it grows by one each time the effective policy changes
    policy     the policy of the mode (only that mode's fields are set):
                 data-centric:
                   model_spec            the frozen spec: ``{"spec": name, "params": {...}}``
                   annotator_overlap     annotators per labelling task (>= 2)
                   agreement_threshold   Krippendorff's alpha an export must reach (gate)
                   relabel_top_k         items error analysis sends back to labelling (0: none)
                   train_on_new_version  train the frozen spec on every new dataset version
                   augmentation          the augmentation's transforms (as the training
                                         ``augment`` action takes them); absent: off
                 model-centric:
                   dataset_version       the pinned version, ``vN``; absent: the registry pins
                                         its latest version when it applies this revision, and
                                         reports it as ``pinned_version`` on its acknowledgement
                   model_spec            the sweep's base spec (a configuration may name another)
                   sweep                 the configurations to train, a list of param objects
                                         (a grid is expanded by the approach charm)
                   selection_metric      the metric the best configuration is chosen by
                   promote_best          give the best model version the ``champion`` alias

Requirer (each service) application databag:
    service           what the service is: ``tracking``, ``data-versioning``, ``labelling``
                      or ``training`` (lets the approach charm say what it does in each mode)
    applied_revision  the policy revision it has applied
    reason            one line: why it cannot apply the current revision (absent when it can)
    waiting           true when that reason resolves by itself (a server still starting, no
                      version yet): nothing for the operator to do
    pinned_version    data-versioning: the version it pinned for an empty ``dataset_version``

The approach charm cannot know the registry's latest version: an empty ``dataset_version``
means "the latest at switch time", resolved and pinned by data-versioning, which reports it.

Every field is optional on the wire and JSON-encoded (``Relation.save``/``load``). Reading
never raises: a bad databag becomes a one-line problem for the caller's status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import ops
import pydantic

from mlops_charms import databags
from mlops_charms.dataset import VersionName

APPROACH_ENDPOINT = "mlops-approach"
MODES = ("model-centric", "data-centric")
SERVICES = ("tracking", "data-versioning", "labelling", "training")
# The training workload's cross-validated metrics (lib/mlops_charms/training.py METRICS).
SELECTION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
SPEC_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
AUGMENTATION_KEYS = frozenset({"image", "text", "copies", "seed"})
MAX_OVERLAP = 20
MAX_TOP_K = 10_000
MAX_SWEEP_CONFIGURATIONS = 256
MAX_REASON = 256

Mode = Literal["model-centric", "data-centric"]
Service = Literal["tracking", "data-versioning", "labelling", "training"]


class ModelSpec(pydantic.BaseModel):
    """A model spec and its hyperparameters."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    spec: str
    params: dict[str, Any] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("spec")
    @classmethod
    def _spec_is_a_name(cls, value: str) -> str:
        if not SPEC_PATTERN.match(value):
            raise ValueError("must be a model spec name such as text-tfidf-logreg")
        return value


class ApproachPolicy(pydantic.BaseModel):
    """The policy of one mode; fields of the other mode are absent."""

    model_config = pydantic.ConfigDict(extra="ignore")

    model_spec: ModelSpec | None = None
    annotator_overlap: int | None = pydantic.Field(default=None, ge=1, le=MAX_OVERLAP)
    agreement_threshold: float | None = pydantic.Field(default=None, ge=-1.0, le=1.0)
    relabel_top_k: int | None = pydantic.Field(default=None, ge=0, le=MAX_TOP_K)
    train_on_new_version: bool | None = None
    augmentation: dict[str, Any] | None = None
    dataset_version: VersionName | None = None
    sweep: list[dict[str, Any]] | None = pydantic.Field(
        default=None, max_length=MAX_SWEEP_CONFIGURATIONS
    )
    selection_metric: str | None = None
    promote_best: bool | None = None

    @pydantic.field_validator("augmentation")
    @classmethod
    def _augmentation_is_transforms(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not value.keys() <= AUGMENTATION_KEYS:
            unknown = ", ".join(sorted(value.keys() - AUGMENTATION_KEYS))
            raise ValueError(f"unknown augmentation keys: {unknown}")
        return value

    @pydantic.field_validator("selection_metric")
    @classmethod
    def _is_a_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in SELECTION_METRICS:
            raise ValueError(f"must be one of {', '.join(SELECTION_METRICS)}")
        return value


class ApproachProviderData(pydantic.BaseModel):
    """What the approach charm publishes."""

    model_config = pydantic.ConfigDict(extra="ignore")

    mode: Mode | None = None
    revision: int | None = pydantic.Field(default=None, ge=1)
    policy: ApproachPolicy | None = None


class ApproachRequirerData(pydantic.BaseModel):
    """What a service acknowledges."""

    model_config = pydantic.ConfigDict(extra="ignore")

    service: Service | None = None
    applied_revision: int | None = pydantic.Field(default=None, ge=0)
    reason: str | None = None
    waiting: bool | None = None
    pinned_version: VersionName | None = None

    @pydantic.field_validator("reason")
    @classmethod
    def _reason_is_one_line(cls, value: str | None) -> str | None:
        if value is not None and ("\n" in value or len(value) > MAX_REASON):
            raise ValueError(f"must be one line of at most {MAX_REASON} characters")
        return value


# --- the requirer's side: what each service calls -----------------------------------------------


@dataclass(frozen=True)
class Approach:
    """The policy in force, as a service reads it from the approach charm."""

    mode: str
    revision: int
    policy: ApproachPolicy

    @property
    def data_centric(self) -> bool:
        return self.mode == "data-centric"


def read(model: ops.Model) -> tuple[Approach | None, str | None]:
    """The approach in force, or None: not related, nothing published yet, or a problem.

    The problem (a bad databag) is one line for the service's status; the service then keeps
    what it applied last, as it would without the relation.
    """
    relation = model.get_relation(APPROACH_ENDPOINT)
    if relation is None:
        return None, None
    data, problem = databags.load_remote_app_data(relation, ApproachProviderData)
    if problem:
        return None, f"{APPROACH_ENDPOINT}: {problem}"
    if data is None or data.mode is None or data.revision is None or data.policy is None:
        return None, None
    return Approach(data.mode, data.revision, data.policy), None


def acknowledge(
    model: ops.Model,
    service: Service,
    applied_revision: int | None,
    *,
    reason: str | None = None,
    waiting: bool = False,
    pinned_version: str | None = None,
) -> None:
    """Say (leader only) which policy revision this service has applied, or why not the current.

    ``applied_revision`` None: nothing applied yet (0 on the wire). ``waiting``: the reason
    resolves by itself (the approach charm then waits rather than blocks).
    """
    relation = model.get_relation(APPROACH_ENDPOINT)
    if relation is None or not model.unit.is_leader():
        return
    if reason is not None:
        reason = databags.one_line(ValueError(reason))[:MAX_REASON]
    databags.save_app_data(
        relation,
        model.app,
        ApproachRequirerData(
            service=service,
            applied_revision=applied_revision or 0,
            reason=reason,
            waiting=True if waiting and reason else None,
            pinned_version=pinned_version,
        ),
    )


def acknowledged(model: ops.Model) -> ApproachRequirerData | None:
    """What this service last acknowledged (its own databag), or None (on a non-leader too)."""
    relation = model.get_relation(APPROACH_ENDPOINT)
    if relation is None or not model.unit.is_leader():
        return None
    data, _problem = databags.load_app_data(relation, model.app, ApproachRequirerData)
    return data


def relation_events(charm: ops.CharmBase) -> tuple[ops.BoundEvent, ...]:
    """The events after which a service re-reads the approach and applies it."""
    return (
        charm.on[APPROACH_ENDPOINT].relation_created,
        charm.on[APPROACH_ENDPOINT].relation_changed,
        charm.on[APPROACH_ENDPOINT].relation_broken,
    )
