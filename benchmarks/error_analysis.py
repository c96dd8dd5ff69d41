"""Benchmark: error analysis on planted label flips, and a training run's overhead (prints only).

1. Confident learning as ``mlops-workload training error-analysis`` runs it (the image spec's
   model with its defaults, its features read from PNG files, 5-fold out-of-sample
   probabilities, cleanlab's ``find_label_issues``) on all 1,797 of scikit-learn's digits
   (shipped with it, no download), 10% of the labels flipped uniformly to another class, for
   several seeds: precision, recall and F1 of the flagged items against the planted flips, and
   the base model's accuracy (its out-of-sample predictions against the true labels: how good
   the model is, trained on the flipped labels). Target: F1 ≥ 0.90.
2. A ``train`` job (image spec, 500 digits) against the real registry and a real MLflow with
   basic auth, started as the workload tests start them (root, Debian's Python): the job's wall
   time, its timings per step, and the orchestration overhead (fetch + log + register) as a
   share of it; and what one authenticated MLflow request costs, which the logging is made of.

Run: ``tox -e benchmark``, or ``PYTHONPATH=.:lib python benchmarks/error_analysis.py``
(``--seeds N``, ``--no-stack`` for part 1 only) in the workload-training environment.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from sklearn.datasets import load_digits

from mlops_workload.training.data import Examples
from mlops_workload.training.operations import RunOptions, find_label_issues
from mlops_workload.training.specs import get_spec
from tests.workload.training.harness import digit_png

SPEC = "image-svc"
FLIP_SHARE = 0.1


def plant_flips(labels: np.ndarray, seed: int) -> tuple[np.ndarray, set[int]]:
    """Labels with ``FLIP_SHARE`` of them moved uniformly to another class; the flipped rows."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=int(FLIP_SHARE * len(labels)), replace=False)
    noisy = labels.copy()
    for index in flipped:
        others = [c for c in range(10) if c != labels[index]]
        noisy[index] = others[int(rng.integers(0, len(others)))]
    return noisy, {int(i) for i in flipped}


def scores(ranked: np.ndarray, planted: set[int]) -> tuple[float, float, float]:
    found = {int(i) for i in ranked}
    hits = len(found & planted)
    precision = hits / len(found) if found else 0.0
    recall = hits / len(planted)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1


def error_analysis_figures(seeds: int) -> None:
    spec = get_spec(SPEC)
    params = spec.resolve({})
    images, labels = load_digits(return_X_y=True)
    truth = np.asarray(labels)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        items = [f"images/digit-{i:04d}.png" for i in range(len(images))]
        (root / "images").mkdir()
        for item, row in zip(items, images, strict=True):
            (root / item).write_bytes(digit_png(row))
        examples = Examples("image", items, [str(t) for t in truth], "labels", "digits")
        features = spec.features(examples, root, params)
    print(f"error analysis: {len(truth)} digits, {FLIP_SHARE:.0%} uniform label flips, 5 folds")
    columns = ("seed", "precision", "recall", "F1", "base acc", "time")
    print(f"{'model':<22} " + " ".join(f"{c:>9}" for c in columns))
    rows = []
    for seed in range(seeds):
        noisy, planted = plant_flips(truth, seed)
        started = time.monotonic()
        found = find_label_issues(
            spec.estimator(params), features, noisy.astype(str), RunOptions()
        )
        seconds = time.monotonic() - started
        predicted = np.array(found.classes)[found.probabilities.argmax(axis=1)].astype(int)
        base_accuracy = float((predicted == truth).mean())
        precision, recall, f1 = scores(found.ranked, planted)
        rows.append((precision, recall, f1, base_accuracy))
        figures = " ".join(f"{value:>9.3f}" for value in rows[-1])
        print(f"{SPEC:<22} {seed:>9} {figures} {seconds:>8.1f}s")
    mean = " ".join(f"{statistics.fmean(column):>9.3f}" for column in zip(*rows, strict=True))
    print(f"{'mean':<32} {mean}")


def request_seconds(url: str, auth: tuple[str, str] | None, count: int = 5) -> float:
    """The median wall time of ``count`` GETs of ``url``."""
    import requests

    times = []
    for _ in range(count):
        started = time.monotonic()
        requests.get(url, auth=auth, timeout=60).raise_for_status()
        times.append(time.monotonic() - started)
    return statistics.median(times)


def overhead_figures() -> None:
    from tests.workload.training.harness import result, start_stack

    with start_stack() as stack:
        print("\na train job (image-svc on v1: 500 digits), real registry and MLflow:")
        keys = ("fetch_s", "read_s", "features_s", "train_s", "log_s", "total_s")
        print(f"{'run':<10} {'wall':>6} " + " ".join(f"{k:>10}" for k in keys) + "  overhead")
        for run in ("first", "second"):
            started = time.monotonic()
            trained = result(stack.training("train", "--version", "v1", "--spec", SPEC))
            wall = time.monotonic() - started
            timings = trained["timings"]
            overhead = timings["fetch_s"] + timings["log_s"]
            print(
                f"{run:<10} {wall:>5.1f}s "
                + " ".join(f"{timings.get(k, 0.0):>9.2f}s" for k in keys)
                + f"  {overhead / wall:.0%} of the job ({overhead / timings['total_s']:.0%} "
                "of the run)"
            )
        consumer = stack.consumer
        api = f"{stack.tracking.url}/api/2.0/mlflow/experiments/get-by-name"
        authed = request_seconds(
            f"{api}?experiment_name={consumer.experiment}", (consumer.username, consumer.password)
        )
        health = request_seconds(f"{stack.tracking.url}/health", None)
        print(
            f"one authenticated MLflow request: {authed:.2f} s (median of 5); "
            f"/health without auth: {health:.3f} s"
        )
        print("(first: the version fetched with git + dvc pull; second: its files reused)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds for error analysis")
    parser.add_argument("--no-stack", action="store_true", help="error analysis only")
    args = parser.parse_args()
    error_analysis_figures(args.seeds)
    if not args.no_stack:
        overhead_figures()


if __name__ == "__main__":
    main()
