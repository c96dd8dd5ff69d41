"""Model specs: a named model (a scikit-learn pipeline) with its params and their defaults.

A spec says which items it reads (image, text or tabular), how they become features, and the
estimator its params build. Params are the spec's own names (``C``, ``size``…), merged over its
defaults; the ``model-spec-hash`` of a run is a stable hash of the spec's name and the merged
params, so two runs with the same hash trained the same model on (possibly) different data.

- ``image-svc``: pixels (Pillow, resized to ``size`` x ``size``, grey or RGB, scaled to 0..1)
  into an RBF SVC whose scores are calibrated into probabilities (temperature scaling on
  internal folds). The model's probabilities decide how well error analysis finds label
  errors: on scikit-learn's digits with 10% of the labels flipped, F1 0.94
  (benchmarks/error_analysis.py);
- ``text-tfidf-logreg``: TF-IDF of word n-grams into a logistic regression;
- ``tabular-hgb``: numbers as they are, categories one-hot, into gradient-boosted trees;
- ``image-torch-cnn``: a small CNN in PyTorch, on CUDA when there is one (extra ``torch``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_workload.training.data import Examples, TrainingError

IMAGE_MODES = ("L", "RGB")


@dataclass(frozen=True)
class ModelSpec:
    """A named model: the items it reads, its params' defaults, and how it is built."""

    name: str
    kind: str  # image, text or tabular
    summary: str
    defaults: Mapping[str, Any]
    build: Callable[[dict[str, Any]], Any]
    serialization: str = "skops"  # how MLflow stores the fitted model
    trusted_types: tuple[str, ...] = ()  # types beyond skops's defaults the model may load
    extra: str | None = None  # the package extra it needs beyond ``training``

    def resolve(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The defaults with ``params`` over them; an unknown name is refused."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise TrainingError(
                f"spec {self.name} has no param {', '.join(unknown)} "
                f"(its params: {', '.join(sorted(self.defaults))})"
            )
        return {**self.defaults, **given}

    def estimator(self, params: Mapping[str, Any]) -> Any:
        """A fresh, unfitted estimator for the resolved ``params``, checked before any fit."""
        if self.kind == "image":
            _check_image_params(params)
        try:
            estimator = self.build(dict(params))
            _validate(estimator)
        except (ValueError, TypeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise TrainingError(f"spec {self.name}: bad params: {first}") from None
        return estimator

    def features(self, examples: Examples, root: Path, params: Mapping[str, Any]) -> Any:
        """The estimator's input for ``examples`` (read from the version's folder ``root``)."""
        if self.kind == "image":
            return image_matrix(root, examples.items, params["size"], params["mode"])
        if self.kind == "text":
            return text_frame(root, examples.items)
        return examples.table

    def feature_key(self, params: Mapping[str, Any]) -> tuple:
        """What the features depend on: equal keys, equal features (sweeps reuse them)."""
        return (params["size"], params["mode"]) if self.kind == "image" else ()


def spec_hash(name: str, params: Mapping[str, Any]) -> str:
    """A stable hash of a spec's name and its resolved params (16 hex digits)."""
    canonical = json.dumps({"spec": name, "params": dict(params)}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _validate(estimator: Any) -> None:
    """Run scikit-learn's own parameter checks on every estimator of a pipeline now."""
    from sklearn.base import BaseEstimator

    parts = [estimator, *estimator.get_params(deep=True).values()]
    for part in parts:
        if isinstance(part, BaseEstimator) and hasattr(part, "_parameter_constraints"):
            part._validate_params()


def _check_image_params(params: Mapping[str, Any]) -> None:
    size, mode = params.get("size"), params.get("mode")
    if not isinstance(size, int) or isinstance(size, bool) or not 4 <= size <= 512:
        raise TrainingError("param size must be an integer from 4 to 512 (pixels a side)")
    if mode not in IMAGE_MODES:
        raise TrainingError(f"param mode must be one of {', '.join(IMAGE_MODES)}")


def image_matrix(root: Path, items: list[str], size: int, mode: str) -> Any:
    """Each image resized to size x size in ``mode``, flattened, scaled to 0..1 (float32)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    rows = np.empty((len(items), size * size * len(mode)), dtype=np.float32)
    for index, item in enumerate(items):
        try:
            with Image.open(root / item) as image:
                pixels = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as error:
            raise TrainingError(f"cannot read the image {item}: {error}") from None
        rows[index] = np.asarray(pixels, dtype=np.float32).reshape(-1) / 255.0
    return rows


def text_frame(root: Path, items: list[str]) -> Any:
    """The items' texts as a one-column DataFrame (``text``): what the text pipeline reads."""
    import pandas as pd

    texts = [(root / item).read_text(encoding="utf-8", errors="replace") for item in items]
    return pd.DataFrame({"text": texts})


def _image_svc(params: dict[str, Any]) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC

    svc = SVC(C=params["C"], gamma=params["gamma"], class_weight=params["class_weight"])
    # Not SVC(probability=True), deprecated in scikit-learn 1.9: the same idea (calibration
    # on internal folds, one SVC fitted on everything), and temperature scaling flags
    # label errors better on digits than Platt's sigmoids.
    model = CalibratedClassifierCV(
        svc,
        method=params["calibration"],
        ensemble=False,  # pyright: ignore[reportArgumentType]  (a bool or "auto")
    )
    return Pipeline([("model", model)])


def _text_tfidf_logreg(params: dict[str, Any]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    ngram_max = params["ngram_max"]
    if not isinstance(ngram_max, int) or ngram_max < 1:
        raise ValueError("ngram_max must be a positive integer")
    tfidf = TfidfVectorizer(
        ngram_range=(1, ngram_max),
        min_df=params["min_df"],
        max_features=params["max_features"],
        sublinear_tf=True,
    )
    model = LogisticRegression(
        C=params["C"], class_weight=params["class_weight"], max_iter=params["max_iter"]
    )
    return Pipeline(
        [("features", ColumnTransformer([("tfidf", tfidf, "text")])), ("model", model)]
    )


def _tabular_hgb(params: dict[str, Any]) -> Any:
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns = ColumnTransformer(
        [
            ("numbers", "passthrough", make_column_selector(dtype_include="number")),
            (
                "categories",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                make_column_selector(dtype_exclude="number"),
            ),
        ]
    )
    model = HistGradientBoostingClassifier(
        learning_rate=params["learning_rate"],
        max_iter=params["max_iter"],
        max_leaf_nodes=params["max_leaf_nodes"],
        l2_regularization=params["l2_regularization"],
        random_state=params["random_state"],
    )
    return Pipeline([("features", columns), ("model", model)])


def _image_torch_cnn(params: dict[str, Any]) -> Any:
    try:
        from mlops_workload.training.torch_model import TorchImageClassifier
    except ImportError:
        raise TrainingError(
            "spec image-torch-cnn needs PyTorch: install mlops-workload[torch]"
        ) from None
    return TorchImageClassifier(
        size=params["size"],
        channels=len(params["mode"]),
        epochs=params["epochs"],
        learning_rate=params["learning_rate"],
        batch_size=params["batch_size"],
        hidden=params["hidden"],
        weight_decay=params["weight_decay"],
        device=params["device"],
        random_state=params["random_state"],
    )


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "image-svc",
            "image",
            "pixels into an RBF SVC with calibrated probabilities",
            {
                "size": 16,
                "mode": "L",
                "C": 1.0,
                "gamma": "scale",
                "class_weight": None,
                "calibration": "temperature",
            },
            _image_svc,
            trusted_types=(
                "sklearn.calibration._CalibratedClassifier",
                "sklearn.calibration._TemperatureScaling",
            ),
        ),
        ModelSpec(
            "text-tfidf-logreg",
            "text",
            "TF-IDF word n-grams into a logistic regression",
            {
                "C": 4.0,
                "ngram_max": 2,
                "min_df": 1,
                "max_features": 50000,
                "class_weight": None,
                "max_iter": 2000,
            },
            _text_tfidf_logreg,
        ),
        ModelSpec(
            "tabular-hgb",
            "tabular",
            "numbers and one-hot categories into gradient-boosted trees",
            {
                "learning_rate": 0.1,
                "max_iter": 200,
                "max_leaf_nodes": 31,
                "l2_regularization": 0.0,
                "random_state": 0,
            },
            _tabular_hgb,
            trusted_types=(
                "sklearn.compose._column_transformer.make_column_selector",
                "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
            ),
        ),
        ModelSpec(
            "image-torch-cnn",
            "image",
            "a small CNN in PyTorch, on CUDA when present",
            {
                "size": 16,
                "mode": "L",
                "epochs": 30,
                "learning_rate": 0.001,
                "batch_size": 64,
                "hidden": 128,
                "weight_decay": 0.0,
                "device": "auto",
                "random_state": 0,
            },
            _image_torch_cnn,
            serialization="cloudpickle",
            extra="torch",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec called ``name``; an unknown name fails saying which exist."""
    try:
        return SPECS[name]
    except KeyError:
        raise TrainingError(f"unknown spec {name!r} (known: {', '.join(sorted(SPECS))})") from None


def describe() -> list[dict[str, Any]]:
    """Every spec, for ``list-specs``."""
    return [
        {
            "name": spec.name,
            "kind": spec.kind,
            "summary": spec.summary,
            "defaults": dict(spec.defaults),
            "extra": spec.extra,
        }
        for spec in SPECS.values()
    ]
