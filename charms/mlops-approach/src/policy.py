"""The approach's policy: from validated config to what each service is told and does.

Knows the two approaches and the services of the stack; knows nothing of Juju.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import yaml

from mlops_charms.approach import (
    AUGMENTATION_KEYS,
    MAX_OVERLAP,
    MAX_SWEEP_CONFIGURATIONS,
    MAX_TOP_K,
    MODES,
    SELECTION_METRICS,
    SPEC_PATTERN,
    ApproachPolicy,
    ModelSpec,
)
from mlops_charms.dataset import VERSION_PATTERN


@dataclass(frozen=True)
class ApproachConfig:
    """The charm's config options, validated (each error names its option)."""

    approach: str = "data-centric"
    model_spec: str = "text-tfidf-logreg"
    annotator_overlap: int = 2
    agreement_threshold: float = 0.8
    relabel_top_k: int = 50
    train_on_new_version: bool = True
    augmentation: str = "off"
    dataset_version: str = ""
    sweep: str = ""
    selection_metric: str = "accuracy"
    promote_best: bool = True

    def __post_init__(self):
        if self.approach not in MODES:
            raise ValueError(f"approach: must be one of {', '.join(MODES)}")
        parse_model_spec(self.model_spec)
        if not 2 <= self.annotator_overlap <= MAX_OVERLAP:
            raise ValueError(f"annotator-overlap: must be between 2 and {MAX_OVERLAP}")
        if not 0.0 <= self.agreement_threshold <= 1.0:
            raise ValueError("agreement-threshold: must be between 0 and 1 (Krippendorff's alpha)")
        if not 0 <= self.relabel_top_k <= MAX_TOP_K:
            raise ValueError(f"relabel-top-k: must be between 0 and {MAX_TOP_K}")
        parse_augmentation(self.augmentation)
        if self.dataset_version and not VERSION_PATTERN.match(self.dataset_version):
            raise ValueError("dataset-version: must be a version such as v3, or empty (latest)")
        parse_sweep(self.sweep)
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(f"selection-metric: must be one of {', '.join(SELECTION_METRICS)}")

    def policy(self, mode: str) -> ApproachPolicy:
        """The policy of ``mode``: only that mode's fields."""
        if mode == "data-centric":
            return ApproachPolicy(
                model_spec=parse_model_spec(self.model_spec),
                annotator_overlap=self.annotator_overlap,
                agreement_threshold=self.agreement_threshold,
                relabel_top_k=self.relabel_top_k,
                train_on_new_version=self.train_on_new_version,
                augmentation=parse_augmentation(self.augmentation),
            )
        return ApproachPolicy(
            dataset_version=self.dataset_version or None,
            model_spec=parse_model_spec(self.model_spec),
            sweep=parse_sweep(self.sweep),
            selection_metric=self.selection_metric,
            promote_best=self.promote_best,
        )


def parse_model_spec(text: str) -> ModelSpec:
    """A spec name (``text-tfidf-logreg``) or a JSON object ``{"spec": …, "params": {…}}``."""
    text = text.strip()
    if SPEC_PATTERN.match(text):
        return ModelSpec(spec=text)
    try:
        return ModelSpec.model_validate_json(text)
    except ValueError:
        raise ValueError(
            'model-spec: must be a spec name or {"spec": name, "params": {...}}'
        ) from None


def parse_augmentation(text: str) -> dict[str, Any] | None:
    """``off`` (None) or a JSON object of transforms, as training's ``augment`` takes them."""
    if text.strip() in ("", "off"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError('augmentation: must be "off" or a JSON object') from None
    if not isinstance(value, dict) or not value:
        raise ValueError('augmentation: must be "off" or a non-empty JSON object')
    if unknown := sorted(value.keys() - AUGMENTATION_KEYS):
        raise ValueError(f"augmentation: unknown keys {', '.join(unknown)}")
    return value


def parse_sweep(text: str) -> list[dict[str, Any]] | None:
    """The configurations of a sweep: a YAML grid (``{param: [values]}``) or list of objects."""
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError("sweep: not valid YAML") from None
    if isinstance(value, dict) and value:
        if not all(isinstance(values, list) and values for values in value.values()):
            raise ValueError("sweep: a grid maps each param to a non-empty list of values")
        names = list(value)
        count = 1
        for values in value.values():
            count *= len(values)
        if count > MAX_SWEEP_CONFIGURATIONS:
            raise ValueError(f"sweep: {count} configurations, at most {MAX_SWEEP_CONFIGURATIONS}")
        return [
            dict(zip(names, combo, strict=True)) for combo in itertools.product(*value.values())
        ]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        if len(value) > MAX_SWEEP_CONFIGURATIONS:
            raise ValueError(f"sweep: at most {MAX_SWEEP_CONFIGURATIONS} configurations")
        return value
    raise ValueError("sweep: a YAML grid {param: [values]} or a non-empty list of objects")


def service_plan(service: str | None, mode: str, policy: ApproachPolicy) -> str:
    """One line: what ``service`` does in ``mode`` under ``policy``."""
    spec = policy.model_spec.spec if policy.model_spec else "?"
    if mode == "data-centric":
        plans = {
            "data-versioning": "unpins; every new version is published as latest",
            "labelling": (
                f"{policy.annotator_overlap} annotators per task; exports below alpha "
                f"{policy.agreement_threshold} are refused; relabel batches are queued"
            ),
            "training": (
                f"trains frozen {spec} on "
                + ("every new version" if policy.train_on_new_version else "demand")
                + f", error analysis sends the top {policy.relabel_top_k} to labelling"
                + ("; augmentation on" if policy.augmentation else "; augmentation off")
            ),
            "tracking": "one experiment per model spec, runs per dataset version",
        }
    else:
        version = policy.dataset_version or "the latest version (pinned at switch)"
        configurations = len(policy.sweep or [])
        plans = {
            "data-versioning": f"pins {version}",
            "labelling": "single pass; exports are not triggered by the loop",
            "training": (
                f"sweeps {configurations} configuration(s) of {spec} on {version} only, "
                f"best by {policy.selection_metric}"
                + (", promoted as champion" if policy.promote_best else "")
            ),
            "tracking": "one experiment per dataset version, runs per configuration",
        }
    if service is None:
        return "unknown service (it did not say what it is)"
    return plans[service]
