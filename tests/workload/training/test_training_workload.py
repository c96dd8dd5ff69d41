"""Training for real: jobs read the real registry, log to a real MLflow, feed a real Label Studio.

The registry (the data-versioning charm on a real Pebble) holds ``v1`` — 500 of scikit-learn's
digits as PNG images, 60 short reviews and a table, labelled as labelling exports them —
``v2``, the same with 10% of the digits' labels flipped with a fixed seed, and ``v3``, items
nobody labelled. MLflow runs from the tracking charm's layer with basic auth; the training
consumer's user is the one the charm provisions. Every command runs as a job: a subprocess
whose environment holds only what the charms published to a training consumer.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mlops_charms import training, training_loop
from mlops_charms.approach import Approach, ApproachPolicy
from mlops_charms.relabel import RelabelProviderData
from tests.workload.registry.harness import git
from tests.workload.training.conftest import Labelling
from tests.workload.training.harness import (
    DIGITS,
    REVIEWS_PER_CLASS,
    TrainingStack,
    create_version,
    digit_item,
    digit_png,
    digits,
    labels_jsonl,
    result,
    reviews,
)

pytestmark = pytest.mark.slow

REVIEWS = 2 * REVIEWS_PER_CLASS
TRANSFORMS = {
    "copies": 1,
    "image": [
        {"op": "rotate", "degrees": 12},
        {"op": "crop", "min_scale": 0.85},
        {"op": "color_jitter", "brightness": 0.3, "contrast": 0.3},
    ],
    "text": [{"op": "swap_words", "n": 2}, {"op": "delete_words", "rate": 0.1}],
}


@pytest.fixture(scope="module")
def trained(stack: TrainingStack) -> dict:
    return result(stack.training("train", "--version", "v1", "--spec", "image-svc"))


@pytest.fixture(scope="module")
def analysed(stack: TrainingStack) -> dict:
    top_k = len(stack.flips)
    return result(
        stack.training(
            "error-analysis",
            *("--version", "v2", "--spec", "image-svc", "--top-k", str(top_k)),
            *("--approach", "data-centric"),
        )
    )


@pytest.fixture(scope="module")
def augmented(stack: TrainingStack) -> list[dict]:
    """v1 augmented with seed 7, then seed 8, then seed 7 again: three new versions."""
    transforms = json.dumps(TRANSFORMS)
    return [
        result(
            stack.training(
                "augment",
                *("--version", "v1", "--transforms", transforms, "--seed", str(seed)),
                registry_user=stack.registry.labelling,  # a consumer with write access
            )
        )
        for seed in (7, 8, 7)
    ]


def content_hash(stack: TrainingStack, version: str, tmp_path: Path) -> str:
    """The DVC .dir hash of the version's data, read with a plain git clone."""
    clone = tmp_path / "clone"
    if not clone.exists():
        git("clone", "--quiet", stack.registry.url_for(stack.registry.writer), str(clone))
    text = git("show", f"{version}:data.dvc", cwd=clone)
    (digest,) = [line.split()[-1] for line in text.splitlines() if "md5:" in line]
    return digest


# --- train ---------------------------------------------------------------------------------------


def test_a_run_on_v1_has_the_version_as_its_dataset_input(
    stack: TrainingStack, trained: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    client = stack.admin_client(monkeypatch)
    run = client.get_run(trained["run_id"])
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    digest = content_hash(stack, "v1", tmp_path)
    assert (dataset.name, dataset.digest, dataset.source_type) == ("v1", digest, "dvc")
    assert json.loads(dataset.source) == {
        "url": stack.registry.reader.registry_url,
        "rev": "v1",
        "path": "data",
    }
    assert stack.registry.reader.password not in dataset.source
    assert run.data.tags["approach"] == "model-centric"
    assert run.data.tags["model-spec-hash"] == trained["model_spec_hash"]
    assert run.data.tags["dataset-version"] == "v1"
    assert run.data.params["C"] == "1.0" and run.data.params["size"] == "16"
    assert client.get_experiment(run.info.experiment_id).name == stack.consumer.experiment
    registered = client.get_model_version("image-svc", trained["model"]["version"])
    assert registered.run_id == trained["run_id"]


def test_a_run_logs_metrics_per_fold_and_on_the_held_out_split(
    stack: TrainingStack, trained: dict, monkeypatch: pytest.MonkeyPatch
):
    client = stack.admin_client(monkeypatch)
    history = client.get_metric_history(trained["run_id"], "cv_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
    assert all(m.value > 0.85 for m in history)
    metrics = client.get_run(trained["run_id"]).data.metrics
    assert metrics["test_accuracy"] > 0.9
    assert metrics["cv_accuracy_mean"] == pytest.approx(trained["metrics"]["cv_accuracy_mean"])
    assert trained["dataset"]["items"] == DIGITS
    assert set(trained["timings"]) >= {"fetch_s", "train_s", "log_s", "total_s"}


def test_the_registered_model_loads_and_classifies_digits(
    stack: TrainingStack, trained: dict, monkeypatch: pytest.MonkeyPatch
):
    import numpy as np
    from mlflow.sklearn import load_model
    from PIL import Image

    stack.admin_client(monkeypatch)
    loaded = load_model(f"models:/image-svc/{trained['model']['version']}")
    assert loaded is not None
    images, labels = digits()
    rows = []
    for row in images[:50]:
        png = Image.open(io.BytesIO(digit_png(row))).convert("L")
        pixels = np.asarray(png.resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32)
        rows.append(pixels.reshape(-1) / 255.0)
    predicted = loaded.predict(np.stack(rows))
    assert (predicted == labels[:50].astype(str)).mean() > 0.9


def test_git_credentials_stay_out_of_the_work_folder(stack: TrainingStack, trained: dict):
    clone = stack.workdir / "registry"
    password = stack.registry.reader.password
    assert (clone / ".git" / "config").is_file()
    for path in [*clone.joinpath(".git").rglob("*"), *clone.joinpath(".dvc").rglob("*")]:
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_the_tabular_spec_trains_on_a_table_of_the_fetched_version(
    stack: TrainingStack, trained: dict
):
    table = result(
        stack.training(
            "train",
            *("--version", "v1", "--spec", "tabular-hgb", "--params", '{"max_iter": 50}'),
            "--no-register",
        )
    )
    assert table["dataset"]["reused"] is True  # v1's files from the image run
    assert (table["dataset"]["labels"], table["dataset"]["items"]) == ("tables/iris.csv", 150)
    assert table["metrics"]["test_accuracy"] > 0.85
    assert table["model"]["name"] is None and table["model"]["uri"].startswith("models:/")


# --- error analysis ------------------------------------------------------------------------------


def test_error_analysis_ranks_the_planted_label_flips_first(stack: TrainingStack, analysed: dict):
    planted = {digit_item(index) for index in stack.flips}
    batch = analysed["relabel_batch"]["items"]
    assert len(batch) == len(planted)
    in_batch = len(planted & set(batch))
    print(f"\nplanted flips among the top {len(batch)}: {in_batch}")
    assert in_batch >= 0.8 * len(planted)
    assert set(batch[:10]) <= planted  # the most confident ones are all planted
    assert [issue["item"] for issue in analysed["ranked"]] == batch
    assert analysed["dataset"]["project"] == "digits"


def test_error_analysis_logs_its_report_to_the_run(
    stack: TrainingStack, analysed: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    client = stack.admin_client(monkeypatch)
    run_id = analysed["run_id"]
    names = {a.path for a in client.list_artifacts(run_id, "error_analysis")}
    assert names == {
        f"error_analysis/{name}"
        for name in (
            "confusion_matrix.json",
            "confusion_matrix.png",
            "label_issues.json",
            "per_class_metrics.json",
            "relabel_batch.json",
        )
    }
    folder = Path(client.download_artifacts(run_id, "error_analysis", str(tmp_path)))
    matrix = json.loads((folder / "confusion_matrix.json").read_text())
    assert matrix["labels"] == [str(d) for d in range(10)]
    assert sum(map(sum, matrix["matrix"])) == DIGITS
    assert (folder / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    ranked = json.loads((folder / "label_issues.json").read_text())
    assert len(ranked) == analysed["label_issues"] >= len(analysed["ranked"])
    assert json.loads((folder / "relabel_batch.json").read_text()) == analysed["relabel_batch"]
    run = client.get_run(run_id)
    assert run.data.tags["approach"] == "data-centric"
    assert run.inputs.dataset_inputs[0].dataset.name == "v2"
    assert set(analysed["per_class"]) == {str(d) for d in range(10)}


def test_the_relabel_batch_reaches_label_studio_as_relabel_tasks(
    stack: TrainingStack, analysed: dict, labelling: Labelling
):
    labels = ",".join(str(digit) for digit in range(10))
    imported = labelling.labelling(
        "import-version",
        *("--project", "digits", "--version", "v2"),
        *("--preset", "image-classification", "--labels", labels),
    )
    assert imported.exit_code == 0, imported.stderr
    # Across mlops-relabel as the training charm publishes it and the labelling charm reads it.
    databag = {"batches": json.dumps([analysed["relabel_batch"]])}
    wire = RelabelProviderData.model_validate({k: json.loads(v) for k, v in databag.items()})
    (batch,) = wire.batches or []
    assert batch.batch_id and batch.items and batch.reason and batch.project == "digits"
    assert (batch.run_id, batch.dataset_version) == (analysed["run_id"], "v2")

    queued = labelling.labelling(
        "relabel",
        *("--project", batch.project, "--items", json.dumps(batch.items)),
        *("--reason", batch.reason, "--batch", batch.batch_id),
    )

    assert queued.exit_code == 0, queued.stderr
    assert (queued.json["queued"], queued.json["missing"]) == (len(batch.items), [])
    server = labelling.server
    projects = server.api("GET", "/api/projects?page_size=100")["results"]
    (relabel,) = [p for p in projects if p["title"] == "digits re-label"]
    tasks = server.api(
        "GET", f"/api/projects/{relabel['id']}/export?exportType=JSON&download_all_tasks=true"
    )
    assert sorted(t["data"]["item"] for t in tasks) == sorted(batch.items)
    assert {t["data"]["relabel_batch"] for t in tasks} == {batch.batch_id}
    assert {t["data"]["dataset_version"] for t in tasks} == {"v2"}


# --- augmentation -----------------------------------------------------------------------------


def test_augmentation_creates_a_version_whose_parent_is_the_source(
    stack: TrainingStack, augmented: list[dict]
):
    first = augmented[0]
    assert (first["version"], first["parent"], first["source"]) == ("v4", "v1", "augmentation")
    listed = stack.registry.workload("list-versions")
    assert listed.exit_code == 0, listed.stderr
    v4 = next(v for v in listed.json["versions"] if v["version"] == "v4")
    assert (v4["parent"], v4["source"]) == ("v1", "augmentation")
    recorded = v4["details"]["augmentation"]
    assert (recorded["from"], recorded["seed"]) == ("v1", 7)
    assert recorded["transforms"]["image"][0] == {
        "op": "rotate",
        "degrees": 12.0,
        "fill": 0,
        "p": 1.0,
    }
    assert recorded["items_added"] == DIGITS + REVIEWS  # a copy of each labelled image and text


def test_the_same_seed_gives_byte_identical_items(
    stack: TrainingStack, augmented: list[dict], tmp_path: Path
):
    seven, eight, seven_again = augmented
    assert [run["version"] for run in augmented] == ["v4", "v5", "v6"]
    hashes = {version: content_hash(stack, version, tmp_path) for version in ("v4", "v5", "v6")}
    assert hashes["v4"] == hashes["v6"] != hashes["v5"]
    assert seven_again["items_digest"] == seven["items_digest"] != eight["items_digest"]


def test_the_text_spec_trains_on_an_augmented_version_with_its_copies_labelled(
    stack: TrainingStack, augmented: list[dict]
):
    trained = result(stack.training("train", "--version", "v4", "--spec", "text-tfidf-logreg"))
    assert (trained["dataset"]["labels"], trained["dataset"]["items"]) == (
        "labels/reviews.jsonl",
        2 * REVIEWS,
    )
    assert trained["metrics"]["test_accuracy"] > 0.8
    assert trained["model"]["name"] == "text-tfidf-logreg"


# --- sweep ---------------------------------------------------------------------------------------


def test_a_sweep_picks_the_best_by_the_metric_and_promotes_it(
    stack: TrainingStack, monkeypatch: pytest.MonkeyPatch
):
    swept = result(
        stack.training(
            "sweep",
            *("--version", "v1", "--spec", "image-svc"),
            *("--grid", json.dumps({"C": [0.01, 1.0, 10.0]}), "--metric", "f1_macro"),
            *("--promote", "champion", "--folds", "3"),
        )
    )
    scores = {run["run_id"]: run["metrics"]["cv_f1_macro_mean"] for run in swept["runs"]}
    assert len(scores) == 3
    best = max(scores, key=lambda run_id: scores[run_id])
    assert swept["best"]["run_id"] == best
    assert swept["best"]["params"]["C"] != 0.01
    client = stack.admin_client(monkeypatch)
    children = client.search_runs(
        [swept["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{swept['parent_run_id']}'",
    )
    assert {run.info.run_id for run in children} == set(scores)
    assert len({run.data.tags["model-spec-hash"] for run in children}) == 3
    assert {run.inputs.dataset_inputs[0].dataset.name for run in children} == {"v1"}
    champion = client.get_model_version_by_alias("image-svc", "champion")
    assert (champion.run_id, champion.version) == (best, swept["promoted"]["version"])


# --- with the approach switch -------------------------------------------------------------------

TEXT_SPEC = "text-tfidf-logreg"


def approach_env(stack: TrainingStack, mode: str, revision: int, version: str) -> dict[str, str]:
    """A job's environment as the training charm sets it with mlops-approach related."""
    approach = Approach(mode, revision, ApproachPolicy())
    experiment = training.experiment_name(approach, stack.consumer.experiment, TEXT_SPEC, version)
    return {
        **stack.job_env(),
        "MLOPS_APPROACH": mode,
        "MLOPS_APPROACH_REVISION": str(revision),
        "MLFLOW_EXPERIMENT_NAME": experiment,
    }


def test_a_run_without_the_approach_has_no_revision_tag(
    stack: TrainingStack, trained: dict, monkeypatch: pytest.MonkeyPatch
):
    tags = stack.admin_client(monkeypatch).get_run(trained["run_id"]).data.tags
    assert "approach_revision" not in tags


def test_data_centric_runs_of_a_spec_share_its_experiment_and_say_the_revision(
    stack: TrainingStack, monkeypatch: pytest.MonkeyPatch
):
    env = approach_env(stack, "data-centric", 7, "v1")
    assert env["MLFLOW_EXPERIMENT_NAME"] == f"{stack.consumer.experiment}-{TEXT_SPEC}"
    runs = [
        result(stack.job(env, "train", "--version", version, "--spec", TEXT_SPEC, "--no-register"))
        for version in ("v1", "v2")
    ]
    client = stack.admin_client(monkeypatch)
    # The job's own MLflow user made the experiment (it may: EDIT on it is its own).
    experiment = client.get_experiment_by_name(env["MLFLOW_EXPERIMENT_NAME"])
    assert experiment is not None
    assert {run["experiment_id"] for run in runs} == {experiment.experiment_id}
    for run in runs:
        tags = client.get_run(run["run_id"]).data.tags
        assert (tags["approach"], tags["approach_revision"]) == ("data-centric", "7")


def test_a_model_centric_sweep_of_configurations_is_grouped_per_version_and_tagged(
    stack: TrainingStack, monkeypatch: pytest.MonkeyPatch
):
    env = approach_env(stack, "model-centric", 5, "v1")
    assert env["MLFLOW_EXPERIMENT_NAME"] == f"{stack.consumer.experiment}-dataset-v1"
    # The policy's configurations, as the loop passes them: a list of one-value grids.
    grid = training_loop.sweep_grid(TEXT_SPEC, [{"C": 1}, {"C": 10, "ngram_max": 1}])
    assert grid == [{"C": [1]}, {"C": [10], "ngram_max": [1]}]
    swept = result(
        stack.job(
            env,
            "sweep",
            *("--version", "v1", "--spec", TEXT_SPEC, "--grid", json.dumps(grid)),
            *("--metric", "f1_macro", "--folds", "3"),
        )
    )
    assert [(run["params"]["C"], run["params"]["ngram_max"]) for run in swept["runs"]] == [
        (1, 2),
        (10, 1),
    ]
    client = stack.admin_client(monkeypatch)
    experiment = client.get_experiment(swept["experiment_id"])
    assert experiment.name == env["MLFLOW_EXPERIMENT_NAME"]
    run_ids = [swept["parent_run_id"], *(run["run_id"] for run in swept["runs"])]
    for run_id in run_ids:  # the parent and every nested run
        tags = client.get_run(run_id).data.tags
        assert (tags["approach"], tags["approach_revision"]) == ("model-centric", "5")


# --- re-labelled labels through the registry ----------------------------------------------------


def test_a_relabel_export_corrects_its_project_s_labels_in_a_real_version(stack: TrainingStack):
    """A version as labelling's re-label export makes it: ``reviews-re-label`` fixes 10 labels."""
    texts = reviews()
    truth = {item: "positive" if "pos-" in item else "negative" for item in texts}
    wrong = sorted(texts)[:10]

    def write(directory: Path) -> None:
        (directory / "texts").mkdir()
        (directory / "labels").mkdir()
        for item, text in texts.items():
            (directory / item).write_text(text)
        flipped = {
            item: ("negative" if truth[item] == "positive" else "positive")
            if item in wrong
            else truth[item]
            for item in texts
        }
        (directory / "labels" / "reviews.jsonl").write_text(labels_jsonl(flipped))
        corrected = {item: truth[item] for item in wrong}
        (directory / "labels" / "reviews-re-label.jsonl").write_text(labels_jsonl(corrected))

    version = create_version(stack.registry, "re-labelled reviews", write)
    trained = result(
        stack.training("train", "--version", version, "--spec", TEXT_SPEC, "--no-register")
    )
    dataset = trained["dataset"]
    assert dataset["project"] == "reviews"  # one project, not two: no --project needed
    assert dataset["labels"] == "labels/reviews.jsonl, labels/reviews-re-label.jsonl"
    assert (dataset["items"], dataset["skipped"]) == (REVIEWS, {})
    assert trained["metrics"]["test_accuracy"] > 0.8


# --- bad input -----------------------------------------------------------------------------------

BAD_TRANSFORMS = json.dumps({"image": [{"op": "explode"}]})


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ("train", "--version", "v99", "--spec", "image-svc"),
            "error: unknown version v99",
        ),
        (
            ("train", "--version", "v1", "--spec", "no-such-spec"),
            "error: unknown spec 'no-such-spec'",
        ),
        (
            ("train", "--version", "v1", "--spec", "image-svc", "--params", "{C: 1"),
            "error: --params is not valid JSON",
        ),
        (
            ("train", "--version", "v1", "--spec", "image-svc", "--params", '{"kernel": "x"}'),
            "error: spec image-svc has no param kernel",
        ),
        (
            ("train", "--version", "v1", "--spec", "image-svc", "--params", '{"C": -1}'),
            "error: spec image-svc: bad params",
        ),
        (
            ("error-analysis", "--version", "v3", "--spec", "image-svc"),
            "error: v3 has no labels",
        ),
        (
            ("train", "--version", "v1", "--spec", "text-tfidf-logreg", "--folds", "40"),
            f"error: class 'negative' of v1 has {REVIEWS_PER_CLASS} labelled items, "
            "fewer than the 40 folds",
        ),
        (
            ("sweep", "--version", "v1", "--spec", "image-svc", "--grid", "[1, 2]"),
            "error: --grid must be a JSON object",
        ),
        (
            ("augment", "--version", "v1", "--transforms", BAD_TRANSFORMS, "--seed", "1"),
            "error: --transforms: each image step is",
        ),
        (
            ("train", "--version", "v1", "--spec", "image-svc", "--folds", "two"),
            "error: argument --folds: invalid int value: 'two'",
        ),
    ],
    ids=[
        "unknown-version",
        "unknown-spec",
        "bad-json",
        "unknown-param",
        "bad-param",
        "no-labels",
        "too-few-per-class",
        "bad-grid",
        "bad-transform",
        "bad-argument",
    ],
)
def test_bad_input_fails_in_one_line_and_creates_nothing(
    stack: TrainingStack, args: tuple[str, ...], reason: str
):
    before = stack.recorded()
    failed = stack.training(*args, registry_user=stack.registry.labelling)
    assert failed.returncode == 1, failed.stdout
    assert failed.stdout == ""
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith(reason), line
    assert stack.recorded() == before


def test_augmenting_without_write_access_fails_in_one_line_and_creates_nothing(
    stack: TrainingStack,
):
    before = stack.recorded()
    refused = stack.training(
        "augment",
        *("--version", "v1", "--project", "reviews"),
        *("--transforms", json.dumps(TRANSFORMS), "--seed", "9"),
    )
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: cannot "), line
    assert stack.recorded() == before


def test_a_job_without_tracking_fails_before_it_fetches(stack: TrainingStack):
    env = stack.job_env()
    del env["MLFLOW_TRACKING_URI"]
    failed = stack.job(env, "train", "--version", "v1", "--spec", "image-svc")
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        "error: MLFLOW_TRACKING_URI is not set: where should the run be logged?"
    )


def test_list_specs_names_every_spec_with_its_defaults(stack: TrainingStack):
    listed = result(stack.training("list-specs"))
    by_name = {spec["name"]: spec for spec in listed["specs"]}
    assert set(by_name) == {"image-svc", "text-tfidf-logreg", "tabular-hgb", "image-torch-cnn"}
    assert by_name["image-torch-cnn"]["extra"] == "torch"
    assert by_name["image-svc"]["defaults"]["calibration"] == "temperature"


def test_the_loop_s_training_skips_a_version_without_labels_and_logs_nothing(
    stack: TrainingStack,
):
    before = stack.recorded()
    args = ("train", "--version", "v3", "--spec", TEXT_SPEC)
    failed = stack.training(*args)
    assert failed.returncode == 1 and "v3 has no labels" in failed.stderr, failed.stderr
    skipped = result(stack.training(*args, "--skip-unlabelled"))
    assert skipped["version"] == "v3"
    assert skipped["skipped"].startswith("v3 has no labels")
    assert stack.recorded() == before
