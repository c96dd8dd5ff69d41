"""Tracking as training uses it: runs, the dataset version as a run input, models, aliases.

The MLflow client reads its server and user from the environment (``MLFLOW_TRACKING_URI``,
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``) and the experiment from ``MLFLOW_EXPERIMENT_NAME``.
A run's dataset input names the version (``v3``), its digest is the version's content hash (the
DVC ``.dir`` hash of ``data``) and its source the registry's git URL with the tag: what
``dvc get <url> data --rev <tag>`` fetches.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from mlops_workload.training.data import FetchedVersion, TrainingError
from mlops_workload.training.specs import ModelSpec, spec_hash
from mlops_workload.workspace import DATA_PATH

APPROACHES = ("model-centric", "data-centric")
# Run tags: the stack's approach and the model spec's identity, searchable across runs.
APPROACH_TAG = "approach"
APPROACH_REVISION_TAG = "approach_revision"  # the approach policy's revision, when related
SPEC_HASH_TAG = "model-spec-hash"
SPEC_TAG = "model-spec"
VERSION_TAG = "dataset-version"
JOB_TAG = "mlops-job"
# MLflow's limits on one log-batch request.
MAX_BATCH_PARAMS = 100
MAX_BATCH_ENTRIES = 1000


def quiet_environment() -> None:
    """No phoning home (MLflow's telemetry, DVC's analytics), no progress bars in job logs."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DVC_NO_ANALYTICS"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def require_tracking() -> None:
    """Fail before any work when there is no tracking server to log to."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise TrainingError("MLFLOW_TRACKING_URI is not set: where should the run be logged?")


def one_line(error: BaseException) -> str:
    """An exception's message on one line (MLflow's can span several), at most 300 characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def source_of(fetched: FetchedVersion) -> dict[str, str]:
    """Where the version comes from: ``dvc get <url> <path> --rev <rev>`` fetches it."""
    return {"url": fetched.registry_url, "rev": fetched.name, "path": DATA_PATH}


def log_dataset_version(fetched: FetchedVersion, context: str = "training") -> None:
    """Record the version as the active run's dataset input: name, content hash, source."""
    import mlflow
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    class DVCRegistrySource(DatasetSource):
        """A folder of a DVC registry at a git revision (defined here: MLflow loads lazily)."""

        def __init__(self, url: str, rev: str, path: str):
            self.url, self.rev, self.path = url, rev, path

        @staticmethod
        def _get_source_type() -> str:
            return "dvc"

        def load(self, dst_path: str | None = None) -> str:
            raise NotImplementedError(
                f"fetch it with: dvc get {self.url} {self.path} --rev {self.rev}"
            )

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DatasetSource:
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return {"url": self.url, "rev": self.rev, "path": self.path}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> DatasetSource:
            return cls(source_dict["url"], source_dict["rev"], source_dict["path"])

    source = DVCRegistrySource(**source_of(fetched))
    dataset = MetaDataset(source, name=fetched.name, digest=fetched.digest)
    mlflow.log_input(dataset, context=context)


def start_run(run_name: str, tags: Mapping[str, str], *, nested: bool = False) -> Any:
    """Start a run in ``MLFLOW_EXPERIMENT_NAME`` (created if missing) with ``tags``."""
    import mlflow

    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if experiment and not nested:
        mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=run_name, tags=dict(tags), nested=nested)


def run_tags(
    spec: ModelSpec,
    params: Mapping[str, Any] | None,
    approach: str,
    job: str,
    version: str,
    approach_revision: str | None = None,
) -> dict[str, str]:
    """A run's tags: approach (and policy revision), spec (and params' hash), job, version."""
    tags = {APPROACH_TAG: approach, SPEC_TAG: spec.name, JOB_TAG: job, VERSION_TAG: version}
    if approach_revision is not None:
        tags[APPROACH_REVISION_TAG] = approach_revision
    if params is not None:
        tags[SPEC_HASH_TAG] = spec_hash(spec.name, params)
    return tags


def log_batch(
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    per_step: Mapping[str, list[float]] | None = None,
    *,
    model_id: str | None = None,
    fetched: FetchedVersion | None = None,
) -> None:
    """Log params and metrics to the active run in as few requests as MLflow allows.

    Each request costs a password check on the server (basic auth), so one batch rather than
    a request per value. ``metrics`` are linked to the logged model ``model_id`` and to the
    dataset version, as MLflow links a model's metrics; ``per_step`` are series (a value per
    fold or epoch).
    """
    import mlflow
    from mlflow.entities import Metric, Param

    run = mlflow.active_run()
    assert run is not None, "no active run"
    now = int(time.time() * 1000)
    dataset = {"dataset_name": fetched.name, "dataset_digest": fetched.digest} if fetched else {}
    entries = [
        Metric(name, float(value), now, 0, model_id=model_id, **dataset)
        for name, value in (metrics or {}).items()
    ]
    for name, values in (per_step or {}).items():
        entries.extend(Metric(name, float(v), now, step) for step, v in enumerate(values))
    pending = [
        Param(name, json.dumps(value) if value is None else str(value))
        for name, value in (params or {}).items()
    ]
    client = mlflow.MlflowClient()
    while pending or entries:
        chunk_params, pending = pending[:MAX_BATCH_PARAMS], pending[MAX_BATCH_PARAMS:]
        room = MAX_BATCH_ENTRIES - len(chunk_params)
        chunk_metrics, entries = entries[:room], entries[room:]
        client.log_batch(run.info.run_id, metrics=chunk_metrics, params=chunk_params)


def _pins(names: tuple[str, ...]) -> list[str]:
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_model(spec: ModelSpec, model: Any, example: Any, *, register: bool) -> dict[str, Any]:
    """Log the fitted model (scikit-learn flavour) and register it under the spec's name."""
    from mlflow.models import infer_signature
    from mlflow.sklearn import log_model as log_sklearn_model

    requirements = ("scikit-learn", "numpy", "scipy", "pandas")
    if spec.serialization == "skops":
        requirements += ("skops",)
    else:
        requirements += ("cloudpickle",)
    if spec.extra == "torch":
        import cloudpickle

        from mlops_workload.training import torch_model

        # By value: the model then loads where PyTorch is, without this package.
        cloudpickle.register_pickle_by_value(torch_model)
        requirements += ("torch",)
    signature = infer_signature(example, model.predict(example))
    info = log_sklearn_model(
        model,
        name="model",
        serialization_format=spec.serialization,
        signature=signature,
        # Given, not inferred: inference loads the model again in a subprocess (seconds).
        pip_requirements=_pins(requirements),
        registered_model_name=spec.name if register else None,
        skops_trusted_types=list(spec.trusted_types) or None,
    )
    return {
        "uri": info.model_uri,
        "model_id": info.model_id,
        "name": spec.name if register else None,
        "version": str(info.registered_model_version) if register else None,
    }


def set_alias(model: str, alias: str, version: str) -> None:
    """Point ``alias`` of the registered model at ``version`` (as tracking's promote-model)."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(model, alias, version)


def log_json(data: Any, artifact_file: str) -> None:
    """Log a JSON artifact to the active run."""
    import mlflow

    mlflow.log_dict(data, artifact_file)


def log_image(image: Any, artifact_file: str) -> None:
    """Log a PIL image as a PNG artifact to the active run."""
    import mlflow

    mlflow.log_image(image, artifact_file=artifact_file)


def confusion_image(matrix: list[list[int]], labels: list[str], cell: int = 28) -> Any:
    """A confusion matrix as an image: rows are the given labels, columns the predictions."""
    from PIL import Image, ImageDraw

    count = len(labels)
    margin = 8 + 7 * min(max((len(label) for label in labels), default=1), 16)
    side = margin + cell * count + 8
    image = Image.new("RGB", (side, side + 16), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 2), "predicted →   (rows: given label)", fill="black")
    top = 16 + margin
    peak = max((max(row) for row in matrix), default=0) or 1
    for i, row in enumerate(matrix):
        draw.text((4, top + i * cell + cell // 3), labels[i][:16], fill="black")
        draw.text((margin + i * cell + 2, 18), labels[i][:3], fill="black")
        for j, value in enumerate(row):
            shade = 255 - int(200 * value / peak)
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            box = (
                margin + j * cell,
                top + i * cell,
                margin + (j + 1) * cell - 1,
                top + (i + 1) * cell - 1,
            )
            draw.rectangle(box, fill=colour, outline="grey")
            draw.text((box[0] + 3, box[1] + cell // 3), str(value), fill="black")
    return image
