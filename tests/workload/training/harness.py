"""The training workload's stack for its tests: the real registry, a real MLflow, and the data.

The registry is the data-versioning charm's, run on a real Pebble (tests/workload/registry/
harness.py); MLflow is the tracking charm's layer on a real Pebble, with basic auth, and the
training consumer's user is the one the charm provisions when training relates to it
(tests/workload/tracking/harness.py).

Training commands run as a job would: ``mlops-workload training ...`` in a subprocess whose
environment holds only what the charms published to a training consumer (the registry's git
URL and the consumer's git user and S3 keys; the tracking URL, user and experiment) and the
job's work folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.workload.pebble_backed import shared_folder
from tests.workload.processes import missing, run_pebble
from tests.workload.registry.harness import Consumer, RunningRegistry, chown_tree, start_registry
from tests.workload.tracking.harness import (
    CLIENT_ENV,
    RunningServer,
    TrackingConsumer,
    relate_consumer,
    start_server,
)

VENV_BIN = Path(sys.executable).parent
EXPERIMENT = "training"
DIGITS = 500  # of scikit-learn's 1797: enough for error analysis, quick on two cores
REVIEWS_PER_CLASS = 30
FLIP_SHARE = 0.1
FLIP_SEED = 20


# --- the data: what labelling exports (items under data/, labels/<project>.jsonl) -------------

REVIEW_WORDS = {
    "positive": ["great", "love", "excellent", "works", "perfect", "happy", "recommend"],
    "negative": ["broke", "awful", "refund", "poor", "useless", "disappointed", "returned"],
}
FILLER = ["the", "it", "was", "this", "item", "and", "my", "order", "really", "after", "a", "day"]


def digits() -> tuple[Any, Any]:
    """The first ``DIGITS`` of scikit-learn's digits (shipped with it): 8x8 images, labels."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    return images[:DIGITS], labels[:DIGITS]


def digit_png(row: Any) -> bytes:
    """One 8x8 digit (0..16) as a 32x32 grey PNG."""
    import numpy as np
    from PIL import Image

    pixels = np.round(np.asarray(row).reshape(8, 8) * 255 / 16).astype(np.uint8)
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.NEAREST)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def digit_item(index: int) -> str:
    return f"images/digit-{index:04d}.png"


def planted_flips(labels: Any) -> dict[int, int]:
    """10% of the items, chosen with a fixed seed, each given another class uniformly."""
    import numpy as np

    rng = np.random.default_rng(FLIP_SEED)
    chosen = rng.choice(len(labels), size=int(FLIP_SHARE * len(labels)), replace=False)
    flips = {}
    for index in sorted(int(i) for i in chosen):
        others = [c for c in range(10) if c != int(labels[index])]
        flips[index] = int(others[int(rng.integers(0, len(others)))])
    return flips


def reviews() -> dict[str, str]:
    """Short synthetic reviews, ``REVIEWS_PER_CLASS`` a class: {item: text}."""
    import numpy as np

    rng = np.random.default_rng(3)
    texts = {}
    for label, words in REVIEW_WORDS.items():
        for i in range(REVIEWS_PER_CLASS):
            chosen = [*rng.choice(words, 3), *rng.choice(FILLER, 5)]
            rng.shuffle(chosen)
            texts[f"texts/{label[:3]}-{i:02d}.txt"] = " ".join(chosen) + "\n"
    return texts


def iris_csv() -> str:
    """scikit-learn's iris with a categorical column, as the table of a tabular spec."""
    from sklearn.datasets import load_iris

    features, targets = load_iris(return_X_y=True)
    names = ("setosa", "versicolor", "virginica")
    lines = ["sepal_length,sepal_width,petal_length,petal_width,site,label"]
    for index, (row, target) in enumerate(zip(features, targets, strict=True)):
        site = "north" if index % 3 else "south"
        lines.append(",".join(f"{value:g}" for value in row) + f",{site},{names[int(target)]}")
    return "\n".join(lines) + "\n"


def labels_jsonl(labels: dict[str, str]) -> str:
    return "".join(
        json.dumps({"item": item, "label": label}, sort_keys=True) + "\n"
        for item, label in sorted(labels.items())
    )


def write_labelled_version(directory: Path, flips: dict[int, int] | None = None) -> None:
    """Digits, reviews and a table as labelling exports them; ``flips`` plant wrong labels."""
    images, classes = digits()
    (directory / "images").mkdir()
    (directory / "texts").mkdir()
    (directory / "tables").mkdir()
    (directory / "labels").mkdir()
    digit_labels = {}
    for index, (row, label) in enumerate(zip(images, classes, strict=True)):
        (directory / digit_item(index)).write_bytes(digit_png(row))
        digit_labels[digit_item(index)] = str((flips or {}).get(index, int(label)))
    texts = reviews()
    for item, text in texts.items():
        (directory / item).write_text(text)
    review_labels = {item: "positive" if "pos-" in item else "negative" for item in texts}
    (directory / "labels" / "digits.jsonl").write_text(labels_jsonl(digit_labels))
    (directory / "labels" / "reviews.jsonl").write_text(labels_jsonl(review_labels))
    (directory / "tables" / "iris.csv").write_text(iris_csv())


def write_unlabelled_version(directory: Path) -> None:
    """A few items that nobody labelled yet."""
    (directory / "texts").mkdir()
    for item, text in list(reviews().items())[:3]:
        (directory / item).write_text(text)


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class TrainingStack:
    """The registry with v1 (clean), v2 (planted flips) and v3 (no labels), and MLflow."""

    registry: RunningRegistry
    tracking: RunningServer
    consumer: TrackingConsumer  # the training application's MLflow user
    base: Path
    flips: dict[int, int]

    def job_env(self, registry_user: Consumer | None = None) -> dict[str, str]:
        """A job's whole environment: what the charms published to it, and its work folder."""
        user = registry_user or self.registry.reader
        home = self.base / "home"
        home.mkdir(exist_ok=True)
        return {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "MLOPS_REGISTRY_URL": user.registry_url,
            "MLOPS_REGISTRY_USERNAME": user.username,
            "MLOPS_REGISTRY_PASSWORD": user.password,
            "AWS_ACCESS_KEY_ID": user.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": user.s3_secret_key,
            "MLOPS_TRAINING_WORKDIR": str(self.workdir),
            "MLFLOW_TRACKING_URI": self.tracking.url,
            "MLFLOW_TRACKING_USERNAME": self.consumer.username,
            "MLFLOW_TRACKING_PASSWORD": self.consumer.password,
            "MLFLOW_EXPERIMENT_NAME": self.consumer.experiment,
            **CLIENT_ENV,
        }

    @property
    def workdir(self) -> Path:
        return self.base / "work"

    def training(
        self, command: str, *args: str, registry_user: Consumer | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``mlops-workload training <command> ...`` as a job runs it."""
        return self.job(self.job_env(registry_user), command, *args)

    def job(self, env: dict[str, str], command: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "mlops-workload"), "training", command, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def recorded(self) -> dict[str, Any]:
        """What the stack holds: the registry's tags, MLflow's runs and model versions."""
        with contextlib.closing(sqlite3.connect(self.tracking.data_dir / "mlflow.db")) as db:
            runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
            models = db.execute("SELECT count(*) FROM model_versions").fetchone()[0]
        return {"tags": self.registry.tag_names(), "runs": runs, "model_versions": models}

    def admin_client(self, monkeypatch: Any) -> Any:
        """An MLflow client as the admin, to read what the jobs logged."""
        import mlflow

        monkeypatch.setenv("MLFLOW_TRACKING_URI", self.tracking.url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", self.tracking.admin_password)
        for name, value in CLIENT_ENV.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(self.tracking.url)
        return mlflow.MlflowClient(tracking_uri=self.tracking.url)


def create_version(registry: RunningRegistry, name: str, write: Any, **options: Any) -> str:
    """Write a source with ``write`` and make it the registry's next version; its name."""
    source = registry.source_dir(name)
    write(source, **options)
    chown_tree(source)
    created = registry.workload("create-version", "--source", str(source), "--message", name)
    assert created.exit_code == 0, created.stderr
    return created.json["version"]


@contextlib.contextmanager
def start_stack() -> Iterator[TrainingStack]:
    """The registry and MLflow, with the three versions the training tests read."""
    if not (VENV_BIN / "mlflow").exists():
        missing(f"mlflow is not installed in {VENV_BIN} (see requirements/workload-training.txt)")
    _images, classes = digits()
    flips = planted_flips(classes)
    with (
        start_registry() as registry,
        shared_folder("training-test-") as base,
        run_pebble(base) as daemon,
    ):
        data_dir = base / "mlflow-data"
        data_dir.mkdir()
        tracking = start_server(daemon, data_dir)
        consumer = relate_consumer(tracking, "training", EXPERIMENT)
        assert create_version(registry, "clean", write_labelled_version) == "v1"
        assert create_version(registry, "flipped", write_labelled_version, flips=flips) == "v2"
        assert create_version(registry, "unlabelled", write_unlabelled_version) == "v3"
        yield TrainingStack(registry, tracking, consumer, base, flips)


def result(process: subprocess.CompletedProcess[str]) -> dict:
    """The JSON result of a command that must have succeeded."""
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout)
