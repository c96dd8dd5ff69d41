"""A project's re-label labels correct its labels: what training reads from a fetched version.

Labelling re-labels project ``P``'s items in ``P re-label`` and its export adds
``labels/P-re-label.jsonl`` beside ``labels/P.jsonl``. These tests write that layout into a
version's folder, as a fetch leaves it, and read it as the training commands do; the test of
the whole path through the registry is in ``test_training_workload``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_workload.labelling.operations import RELABEL_SUFFIX, slug
from mlops_workload.training.data import FetchedVersion, TrainingError, labelled_items

PROJECT = "reviews"
RELABEL = slug(PROJECT + RELABEL_SUFFIX)


def write(root: Path, name: str, records: list[dict]) -> None:
    (root / "labels").mkdir(exist_ok=True)
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (root / "labels" / f"{name}.jsonl").write_text(lines)


@pytest.fixture
def version(tmp_path: Path) -> FetchedVersion:
    """A version with four labelled texts of ``reviews``, one with an augmented copy."""
    (tmp_path / "texts").mkdir()
    for name in ("a", "b", "c", "d", "a.aug-7-0"):
        (tmp_path / "texts" / f"{name}.txt").write_text(f"text {name}\n")
    write(
        tmp_path,
        PROJECT,
        [
            {"item": "texts/a.txt", "label": "negative"},
            {"item": "texts/b.txt", "label": "negative"},
            {"item": "texts/c.txt", "label": "positive"},
            {"item": "texts/d.txt", "label": "positive"},
            {"item": "texts/a.aug-7-0.txt", "label": "negative", "augmented_from": "texts/a.txt"},
        ],
    )
    return FetchedVersion("v5", tmp_path, "digest", "commit", "http://registry", reused=False)


def labels_of(version: FetchedVersion, project: str | None = None) -> dict[str, str]:
    examples = labelled_items(version, "text", project)
    return dict(zip(examples.items, examples.labels, strict=True))


def test_the_labelling_naming_of_the_relabel_file():
    assert RELABEL == "reviews-re-label"


def test_relabelled_items_take_their_new_label_and_the_others_keep_theirs(
    version: FetchedVersion,
):
    write(version.path, RELABEL, [{"item": "texts/a.txt", "label": "positive"}])
    examples = labelled_items(version, "text")
    assert examples.project == PROJECT
    assert examples.source == "labels/reviews.jsonl, labels/reviews-re-label.jsonl"
    assert labels_of(version) == {
        "texts/a.txt": "positive",
        "texts/a.aug-7-0.txt": "positive",  # the copy follows the item it was made from
        "texts/b.txt": "negative",
        "texts/c.txt": "positive",
        "texts/d.txt": "positive",
    }


def test_the_relabel_file_is_part_of_its_project_not_another_project(version: FetchedVersion):
    write(version.path, RELABEL, [{"item": "texts/b.txt", "label": "positive"}])
    # Two files, one project: the choice is not ambiguous, and naming the project reads both.
    assert labels_of(version)["texts/b.txt"] == "positive"
    assert labels_of(version, PROJECT)["texts/b.txt"] == "positive"


def test_another_project_of_the_same_kind_still_makes_the_choice_ambiguous(
    version: FetchedVersion,
):
    write(version.path, RELABEL, [{"item": "texts/b.txt", "label": "positive"}])
    write(version.path, "tweets", [{"item": "texts/c.txt", "label": "negative"}])
    with pytest.raises(TrainingError, match=r"in 2 projects \(reviews, tweets\)"):
        labelled_items(version, "text")


def test_an_item_relabelled_without_a_single_label_is_left_out_as_ambiguous(
    version: FetchedVersion,
):
    write(version.path, RELABEL, [{"item": "texts/c.txt", "label": None}])
    examples = labelled_items(version, "text")
    assert "texts/c.txt" not in examples.items
    assert examples.skipped == {"no single label": 1}


def test_a_relabel_file_without_its_project_is_a_project_of_its_own(tmp_path: Path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("a\n")
    write(tmp_path, RELABEL, [{"item": "texts/a.txt", "label": "positive"}])
    version = FetchedVersion("v5", tmp_path, "digest", "commit", "http://registry", False)
    examples = labelled_items(version, "text")
    assert (examples.project, examples.items) == (RELABEL, ["texts/a.txt"])
