"""What the training commands do: train, error analysis and sweeps on one dataset version.

Every command checks its input (spec, params, grid, options) before it fetches anything,
reads the version once, computes, and only then logs: one MLflow run (a sweep: a parent run
and one nested run per configuration) tagged with the approach (and, when the approach switch
set it, its policy's revision) and the model spec's hash, whose dataset input is the version.
A failure before the logging leaves nothing in tracking.
Metrics per fold come from stratified k-fold cross-validation on the training split, the
held-out metrics from the model fitted on it — the one that is logged and registered.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from mlops_workload.training import data, tracking
from mlops_workload.training.data import Examples, FetchedVersion, RegistryAccess, TrainingError
from mlops_workload.training.specs import ModelSpec, get_spec

SCORES = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
MAX_BATCH_ITEMS = 10_000  # mlops_relabel's limit per batch
MAX_SWEEP_CONFIGS = 200
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
RELABEL_REASON = "suspected label error (confident learning on out-of-sample probabilities)"
EXAMPLE_ROWS = 5  # rows of the training data the model's signature is inferred from


@dataclass(frozen=True)
class DataOptions:
    """Which of the version's labels a spec reads."""

    project: str | None = None  # the labelling project (labels/<project>.jsonl)
    table: str | None = None  # tabular: the CSV table
    label_column: str = "label"  # tabular: its label column


@dataclass(frozen=True)
class RunOptions:
    """How a spec is evaluated, and what the run is tagged with."""

    folds: int = 5
    test_size: float = 0.2
    seed: int = 0
    approach: str = "model-centric"
    approach_revision: str | None = None  # the approach policy's revision (a run tag)


@dataclass
class Prepared:
    """A version read for one spec: its examples, labels and (cached) features."""

    fetched: FetchedVersion
    examples: Examples
    spec: ModelSpec
    labels: Any  # numpy array of the labels (strings)
    timings: dict[str, float]
    _features: dict[tuple, Any] = field(default_factory=dict)

    def features(self, params: Mapping[str, Any]) -> Any:
        """The spec's features for ``params``, computed once per feature key (sweeps)."""
        key = self.spec.feature_key(params)
        if key not in self._features:
            started = time.monotonic()
            self._features[key] = self.spec.features(self.examples, self.fetched.path, params)
            self.timings["features_s"] = self.timings.get("features_s", 0.0) + (
                time.monotonic() - started
            )
        return self._features[key]


@dataclass(frozen=True)
class Evaluation:
    """One configuration cross-validated, fitted on the training split, scored on the rest."""

    params: dict[str, Any]
    per_fold: dict[str, list[float]]  # each score, one value per fold
    summary: dict[str, float]  # cv_<score>_mean and test_<score>
    model: Any  # fitted on the whole training split


def _take(features: Any, rows: Any) -> Any:
    return features.iloc[rows] if hasattr(features, "iloc") else features[rows]


def _check_options(options: RunOptions) -> None:
    if options.folds < 2:
        raise TrainingError("--folds must be at least 2")
    if not 0.0 < options.test_size < 1.0:
        raise TrainingError("--test-size must be between 0 and 1")
    if options.approach not in tracking.APPROACHES:
        raise TrainingError(f"--approach must be one of {', '.join(tracking.APPROACHES)}")
    if options.approach_revision is not None and not options.approach_revision.isdigit():
        raise TrainingError("--approach-revision must be a policy revision number")


def _checked_spec(
    spec_name: str, params: Mapping[str, Any] | None, options: RunOptions
) -> tuple[ModelSpec, dict[str, Any]]:
    """The spec and its resolved params, refused before any fetch if they cannot work."""
    spec = get_spec(spec_name)
    resolved = spec.resolve(params)
    spec.estimator(resolved)
    _check_options(options)
    return spec, resolved


def _check_classes(labels: Any, folds: int, version: str, where: str = "") -> None:
    counts = Counter(labels.tolist())
    if len(counts) < 2:
        raise TrainingError(f"{version} has a single class{where}: nothing to classify")
    label, fewest = min(counts.items(), key=lambda pair: (pair[1], str(pair[0])))
    if fewest < folds:
        raise TrainingError(
            f"class {label!r} of {version} has {fewest} labelled items{where}, "
            f"fewer than the {folds} folds"
        )


def prepare(
    access: RegistryAccess, version: str, spec: ModelSpec, options: DataOptions
) -> Prepared:
    """Fetch the version and read the spec's examples from it."""
    import numpy as np

    started = time.monotonic()
    fetched = data.fetch(access, version)
    fetched_at = time.monotonic()
    if spec.kind == "tabular":
        examples = data.table_rows(fetched, options.table, options.label_column)
    else:
        examples = data.labelled_items(fetched, spec.kind, options.project)
    timings = {"fetch_s": fetched_at - started, "read_s": time.monotonic() - fetched_at}
    return Prepared(fetched, examples, spec, np.asarray(examples.labels), timings)


def _split(labels: Any, options: RunOptions, version: str) -> tuple[Any, Any]:
    """Stratified training and held-out rows; every class must fill the folds in training."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    _check_classes(labels, options.folds, version)
    indices = np.arange(len(labels))
    try:
        train, test = train_test_split(
            indices, test_size=options.test_size, stratify=labels, random_state=options.seed
        )
    except ValueError as error:
        raise TrainingError(
            f"cannot hold out {options.test_size:g} of {version}: {error}"
        ) from None
    _check_classes(labels[train], options.folds, version, " in the training split")
    return np.sort(train), np.sort(test)


@contextlib.contextmanager
def _fit_errors(spec: ModelSpec, version: str) -> Iterator[None]:
    """A model that cannot fit this data (an empty vocabulary, say) is bad input, in one line."""
    try:
        yield
    except ValueError as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TrainingError(f"spec {spec.name} cannot fit {version}: {first}") from None


def _evaluate(
    prepared: Prepared, params: dict[str, Any], split: tuple[Any, Any], options: RunOptions
) -> Evaluation:
    """Cross-validate on the training split, fit on it, score on the held-out split."""
    from sklearn import metrics
    from sklearn.model_selection import StratifiedKFold, cross_validate

    spec, labels, features = prepared.spec, prepared.labels, prepared.features(params)
    train, test = split
    x_train, y_train = _take(features, train), labels[train]
    folds = StratifiedKFold(options.folds, shuffle=True, random_state=options.seed)
    with _fit_errors(spec, prepared.fetched.name):
        scores = cross_validate(
            spec.estimator(params), x_train, y_train, cv=folds, scoring=list(SCORES)
        )
        model = spec.estimator(params).fit(x_train, y_train)
    per_fold = {name: [float(v) for v in scores[f"test_{name}"]] for name in SCORES}
    predicted, truth = model.predict(_take(features, test)), labels[test]
    summary = {f"cv_{name}_mean": sum(values) / len(values) for name, values in per_fold.items()}
    summary["test_accuracy"] = float(metrics.accuracy_score(truth, predicted))
    summary["test_balanced_accuracy"] = float(metrics.balanced_accuracy_score(truth, predicted))
    for average in ("macro", "weighted"):
        # A class never predicted scores 0, without a warning in the job's log.
        f1 = metrics.f1_score(
            truth,
            predicted,
            average=average,
            zero_division=0,  # pyright: ignore[reportArgumentType]  (0, 1, nan or "warn")
        )
        summary[f"test_f1_{average}"] = float(f1)
    return Evaluation(params, per_fold, summary, model)


def _series(evaluation: Evaluation) -> dict[str, list[float]]:
    """The metrics with a value per step: per fold, and per epoch where the model has them."""
    series = {f"cv_{name}": values for name, values in evaluation.per_fold.items()}
    model = evaluation.model
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    losses = getattr(final, "loss_curve_", None)  # PyTorch spec: the training loss per epoch
    if losses:
        series["train_loss"] = [float(loss) for loss in losses]
    return series


def _run_params(
    params: Mapping[str, Any], prepared: Prepared, options: RunOptions
) -> dict[str, Any]:
    return {
        **params,
        "dataset_version": prepared.fetched.name,
        "items": len(prepared.examples.items),
        "classes": len(set(prepared.examples.labels)),
        "folds": options.folds,
        "test_size": options.test_size,
        "seed": options.seed,
    }


def _log_evaluation(
    evaluation: Evaluation,
    prepared: Prepared,
    options: RunOptions,
    split: tuple[Any, Any],
    *,
    with_model: bool,
    register: bool = True,
) -> dict[str, Any] | None:
    """Log one evaluation to the active run: the model first (when asked), then the rest.

    Metrics logged after the model are linked to it (and to the dataset version).
    """
    logged = None
    if with_model:
        features = prepared.features(evaluation.params)
        example = _take(features, split[0][:EXAMPLE_ROWS])
        logged = tracking.log_model(prepared.spec, evaluation.model, example, register=register)
    tracking.log_batch(
        _run_params(evaluation.params, prepared, options),
        evaluation.summary,
        _series(evaluation),
        model_id=logged["model_id"] if logged else None,
        fetched=prepared.fetched,
    )
    tracking.log_dataset_version(prepared.fetched)
    return logged


def _tags(
    spec: ModelSpec, params: Mapping[str, Any] | None, options: RunOptions, job: str, version: str
) -> dict[str, str]:
    return tracking.run_tags(
        spec, params, options.approach, job, version, options.approach_revision
    )


def _dataset(prepared: Prepared) -> dict[str, Any]:
    """The version a command read, for its result."""
    fetched, examples = prepared.fetched, prepared.examples
    return {
        "version": fetched.name,
        "digest": fetched.digest,
        "commit": fetched.commit,
        "source": tracking.source_of(fetched),
        "reused": fetched.reused,
        "labels": examples.source,
        "project": examples.project,
        "items": len(examples.items),
        "skipped": examples.skipped,
    }


def _timings(
    prepared: Prepared, started: float, stage: str, stage_started: float, logging_at: float
) -> dict[str, float]:
    """A run's seconds, rounded: the data's (``prepared``), the ``stage``'s, logging, in all."""
    finished = time.monotonic()
    timings = {
        **prepared.timings,
        stage: logging_at - stage_started,
        "log_s": finished - logging_at,  # the run, its metrics, the model and its registration
        "total_s": finished - started,
    }
    return {name: round(value, 3) for name, value in timings.items()}


def train(
    access: RegistryAccess,
    version: str,
    spec_name: str,
    params: Mapping[str, Any] | None = None,
    *,
    options: RunOptions = RunOptions(),  # noqa: B008 - frozen
    data_options: DataOptions = DataOptions(),  # noqa: B008 - frozen
    register: bool = True,
) -> dict[str, Any]:
    """Train the spec on the version, log the run and register the model."""
    started = time.monotonic()
    spec, resolved = _checked_spec(spec_name, params, options)
    tracking.require_tracking()
    prepared = prepare(access, version, spec, data_options)
    split = _split(prepared.labels, options, version)
    prepared.features(resolved)
    trained_at = time.monotonic()
    evaluation = _evaluate(prepared, resolved, split, options)
    logging_at = time.monotonic()
    tags = _tags(spec, resolved, options, "train", version)
    with tracking.start_run(f"{spec.name}@{version}", tags) as run:
        logged = _log_evaluation(
            evaluation, prepared, options, split, with_model=True, register=register
        )
    # train_s: cross-validation and the final fit
    timings = _timings(prepared, started, "train_s", trained_at, logging_at)
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "spec": spec.name,
        "params": resolved,
        "model_spec_hash": tags[tracking.SPEC_HASH_TAG],
        "approach": options.approach,
        "dataset": _dataset(prepared),
        "classes": sorted(set(prepared.examples.labels)),
        "metrics": evaluation.summary,
        "cv": evaluation.per_fold,
        "model": logged,
        "timings": timings,
    }


@dataclass(frozen=True)
class LabelIssues:
    """Confident learning's verdict on a set of labelled examples."""

    classes: list[str]
    given: Any  # each example's label, as an index into ``classes``
    probabilities: Any  # out-of-sample class probabilities, one row per example
    ranked: Any  # the suspected label errors, most likely first (indices of examples)


def find_label_issues(
    estimator: Any, features: Any, labels: Any, options: RunOptions
) -> LabelIssues:
    """Out-of-sample probabilities of ``estimator`` (unfitted; k-fold), then confident learning."""
    import numpy as np
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    classes, given = np.unique(labels, return_inverse=True)
    folds = StratifiedKFold(options.folds, shuffle=True, random_state=options.seed)
    probabilities = np.asarray(
        cross_val_predict(estimator, features, given, cv=folds, method="predict_proba")
    )
    ranked = cleanlab_issues(
        labels=given, pred_probs=probabilities, return_indices_ranked_by="self_confidence"
    )
    return LabelIssues([str(c) for c in classes], given, probabilities, ranked)


def error_analysis(
    access: RegistryAccess,
    version: str,
    spec_name: str,
    params: Mapping[str, Any] | None = None,
    *,
    top_k: int = 50,
    options: RunOptions = RunOptions(),  # noqa: B008 - frozen
    data_options: DataOptions = DataOptions(),  # noqa: B008 - frozen
) -> dict[str, Any]:
    """Rank suspected label errors of the version; the top ones become a relabel batch."""
    from sklearn import metrics

    started = time.monotonic()
    spec, resolved = _checked_spec(spec_name, params, options)
    if not 1 <= top_k <= MAX_BATCH_ITEMS:
        raise TrainingError(f"--top-k must be from 1 to {MAX_BATCH_ITEMS}")
    tracking.require_tracking()
    prepared = prepare(access, version, spec, data_options)
    _check_classes(prepared.labels, options.folds, version)
    features = prepared.features(resolved)
    analysed_at = time.monotonic()
    with _fit_errors(spec, version):
        found = find_label_issues(spec.estimator(resolved), features, prepared.labels, options)
    names, given, probabilities = found.classes, found.given, found.probabilities
    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(names)))
    report = metrics.classification_report(
        given,
        predicted,
        labels=indices,
        target_names=names,
        output_dict=True,
        zero_division=0,  # pyright: ignore[reportArgumentType]  (0, 1, nan or "warn")
    )
    per_class = cast("dict[str, Any]", report)  # a dict, with output_dict
    matrix = metrics.confusion_matrix(given, predicted, labels=indices).tolist()
    items = prepared.examples.items
    issues = [
        {
            "rank": rank,
            "item": items[index],
            "given_label": names[given[index]],
            "suggested_label": names[predicted[index]],
            "self_confidence": round(float(probabilities[index, given[index]]), 4),
            "suggested_confidence": round(float(probabilities[index, predicted[index]]), 4),
        }
        for rank, index in enumerate(found.ranked.tolist(), 1)
    ]
    summary = {
        "oos_accuracy": float(metrics.accuracy_score(given, predicted)),
        "oos_f1_macro": float(metrics.f1_score(given, predicted, average="macro")),
        "label_issues": float(len(issues)),
        "label_issue_share": len(issues) / len(given),
    }
    logging_at = time.monotonic()
    tags = _tags(spec, resolved, options, "error-analysis", version)
    with tracking.start_run(f"error-analysis {spec.name}@{version}", tags) as run:
        run_id = run.info.run_id
        run_params = {**_run_params(resolved, prepared, options), "top_k": top_k}
        tracking.log_batch(run_params, summary, fetched=prepared.fetched)
        tracking.log_dataset_version(prepared.fetched)
        # mlops_relabel's RelabelBatch: labelling queues each batch id once.
        batch = {
            "batch_id": f"error-analysis-{run_id}",
            "items": [issue["item"] for issue in issues[:top_k]],
            "reason": RELABEL_REASON,
            "run_id": run_id,
            "dataset_version": version,
            "project": prepared.examples.project,
        }
        confusion = {"labels": names, "matrix": matrix}
        tracking.log_json(per_class, "error_analysis/per_class_metrics.json")
        tracking.log_json(confusion, "error_analysis/confusion_matrix.json")
        tracking.log_image(
            tracking.confusion_image(matrix, names), "error_analysis/confusion_matrix.png"
        )
        tracking.log_json(issues, "error_analysis/label_issues.json")
        tracking.log_json(batch, "error_analysis/relabel_batch.json")
    timings = _timings(prepared, started, "analysis_s", analysed_at, logging_at)
    return {
        "run_id": run_id,
        "experiment_id": run.info.experiment_id,
        "spec": spec.name,
        "params": resolved,
        "model_spec_hash": tags[tracking.SPEC_HASH_TAG],
        "approach": options.approach,
        "dataset": _dataset(prepared),
        "metrics": summary,
        "per_class": {name: per_class[name] for name in names},
        "confusion_matrix": confusion,
        "label_issues": len(issues),
        "ranked": issues[:top_k],
        "relabel_batch": batch,
        "timings": timings,
    }


def _grid(spec: ModelSpec, base: Mapping[str, Any], grid: Any) -> list[dict[str, Any]]:
    """Every configuration of the grid over ``base``, each checked before any fetch.

    A grid is a JSON object of param: [values], or a list of them (their configurations one
    after the other, as scikit-learn's ParameterGrid takes them): a list of configurations
    ``[{"C": 1}, {"C": 10}]`` is ``[{"C": [1]}, {"C": [10]}]``; ``{}`` is ``base`` alone.
    """
    from sklearn.model_selection import ParameterGrid

    if isinstance(grid, dict) and grid:
        grids = [grid]
    elif isinstance(grid, list) and grid and all(isinstance(g, dict) for g in grid):
        grids = grid
    else:
        raise TrainingError(
            "--grid must be a JSON object of param: [values], or a non-empty list of them"
        )
    for one in grids:
        for name, values in one.items():
            if not isinstance(values, list) or not values:
                raise TrainingError(f"--grid: {name} must list at least one value")
    combinations = len(ParameterGrid(grids))
    if combinations > MAX_SWEEP_CONFIGS:
        raise TrainingError(
            f"--grid makes {combinations} configurations (at most {MAX_SWEEP_CONFIGS})"
        )
    configs = [spec.resolve({**base, **combo}) for combo in ParameterGrid(grids)]
    for params in configs:
        spec.estimator(params)
    return configs


def check_alias(alias: str) -> None:
    """The alias rules of tracking's promote-model action."""
    if not ALIAS_PATTERN.match(alias) or alias.lower() == "latest":
        raise TrainingError("--promote: an alias is letters, digits, '_' or '-', not 'latest'")
    if re.fullmatch(r"v\d+", alias):
        raise TrainingError(f"--promote: alias {alias!r} is reserved for version references")


def sweep(
    access: RegistryAccess,
    version: str,
    spec_name: str,
    grid: Any,
    *,
    base_params: Mapping[str, Any] | None = None,
    metric: str = "accuracy",
    promote: str | None = None,
    options: RunOptions = RunOptions(),  # noqa: B008 - frozen
    data_options: DataOptions = DataOptions(),  # noqa: B008 - frozen
) -> dict[str, Any]:
    """Each configuration of the grid as a nested run; the best (by CV ``metric``) registered."""
    started = time.monotonic()
    spec = get_spec(spec_name)
    if metric not in SCORES:
        raise TrainingError(f"--metric must be one of {', '.join(SCORES)}")
    configs = _grid(spec, base_params or {}, grid)
    if promote is not None:
        check_alias(promote)
    _check_options(options)
    tracking.require_tracking()
    prepared = prepare(access, version, spec, data_options)
    split = _split(prepared.labels, options, version)
    key = f"cv_{metric}_mean"
    for params in configs:
        prepared.features(params)
    trained_at = time.monotonic()
    evaluations = [_evaluate(prepared, params, split, options) for params in configs]
    # The first of equals wins: the grid's order decides ties, not chance.
    best = max(range(len(evaluations)), key=lambda i: (evaluations[i].summary[key], -i))
    logging_at = time.monotonic()
    runs: list[dict[str, Any]] = []
    parent_tags = _tags(spec, None, options, "sweep", version)
    with tracking.start_run(f"sweep {spec.name}@{version}", parent_tags) as parent:
        tracking.log_batch(
            {
                "grid": json.dumps(grid, sort_keys=True),
                "metric": metric,
                "configurations": len(configs),
                "best_configuration": best,
            },
            {f"best_{key}": evaluations[best].summary[key]},
        )
        tracking.log_dataset_version(prepared.fetched)
        for index, evaluation in enumerate(evaluations):
            tags = _tags(spec, evaluation.params, options, "sweep", version)
            with tracking.start_run(f"{spec.name}#{index}", tags, nested=True) as child:
                logged = _log_evaluation(
                    evaluation, prepared, options, split, with_model=index == best
                )
            runs.append(
                {
                    "run_id": child.info.run_id,
                    "params": evaluation.params,
                    "model_spec_hash": tags[tracking.SPEC_HASH_TAG],
                    "metrics": evaluation.summary,
                    **({"model": logged} if logged else {}),
                }
            )
    model_version = runs[best]["model"]["version"]
    if promote is not None:
        tracking.set_alias(spec.name, promote, model_version)
    timings = _timings(prepared, started, "train_s", trained_at, logging_at)
    return {
        "parent_run_id": parent.info.run_id,
        "experiment_id": parent.info.experiment_id,
        "spec": spec.name,
        "metric": key,
        "approach": options.approach,
        "dataset": _dataset(prepared),
        "runs": runs,
        "best": runs[best],
        "promoted": (
            {"model": spec.name, "alias": promote, "version": model_version} if promote else None
        ),
        "timings": timings,
    }
