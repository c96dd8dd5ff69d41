"""The agreement measures against cases computed by hand (no Label Studio needed)."""

from __future__ import annotations

import pytest

from mlops_workload.labelling.client import LabellingError
from mlops_workload.labelling.consistency import (
    Annotation,
    TaskAnnotations,
    gate_refusal,
    is_near_tie,
    krippendorff_alpha_nominal,
    observed_agreement,
    report,
)
from mlops_workload.labelling.operations import (
    agreement,
    consensus,
    labels_jsonl,
    newest_answers,
    reduce_annotation,
)

USERS = {1: "ann@example.com", 2: "bob@example.com", 3: "cat@example.com"}


def test_observed_agreement_is_the_share_of_agreeing_pairs():
    assert observed_agreement(["a", "a"]) == 1.0
    assert observed_agreement(["a", "b"]) == 0.0
    # 3 annotators, 2-1: of the 3 pairs only one agrees.
    assert observed_agreement(["a", "a", "b"]) == pytest.approx(1 / 3)
    # 4 annotators, 2-2: 2 agreeing pairs out of 6.
    assert observed_agreement(["a", "a", "b", "b"]) == pytest.approx(2 / 6)
    assert observed_agreement(["a"]) is None


def test_alpha_of_two_coders_matches_the_hand_computation():
    # Values: a x3, b x5 (n = 8); the one mixed unit gives o_ab = o_ba = 1.
    # alpha = 1 - (n - 1) * 2 / (2 * n_a * n_b) = 1 - 7 * 2 / 30 = 0.5333...
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"]]
    assert krippendorff_alpha_nominal(units) == pytest.approx(1 - 14 / 30)


def test_alpha_matches_krippendorffs_published_example_with_missing_values():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers,
    # 12 units, values missing; nominal alpha = 0.743.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[str(o[u]) for o in observers if o[u] is not None] for u in range(12)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=0.0005)


def test_alpha_is_one_for_perfect_agreement_and_undefined_without_variation():
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None
    assert krippendorff_alpha_nominal([["a"], ["b"]]) is None


def test_systematic_disagreement_gives_negative_alpha():
    # Every unit split: worse than chance.
    alpha = krippendorff_alpha_nominal([["a", "b"], ["b", "a"], ["a", "b"]])
    assert alpha is not None
    assert alpha < 0


def test_near_tie_needs_three_values_and_a_lead_of_at_most_one():
    assert is_near_tie(["a", "a", "b"])
    assert is_near_tie(["a", "b", "c"])
    assert not is_near_tie(["a", "a", "a", "b"])
    assert not is_near_tie(["a", "b"])  # two annotators who differ: inconsistent, not a tie


def _task(task_id: int, item: str, *answers: tuple[str, str | None]) -> TaskAnnotations:
    annotations = []
    for annotator, value in answers:
        if value == "unsure":
            annotations.append(Annotation(annotator, None, "unsure", unsure=True))
        elif value is None:
            annotations.append(Annotation(annotator, None, None, skipped=True))
        else:
            annotations.append(Annotation(annotator, f'"{value}"', value))
    return TaskAnnotations(task_id, item, annotations)


def test_report_separates_inconsistent_from_ambiguous_tasks():
    tasks = [
        _task(1, "a.txt", ("ann", "pos"), ("bob", "pos")),
        _task(2, "b.txt", ("ann", "pos"), ("bob", "neg")),
        _task(3, "c.txt", ("ann", "unsure"), ("bob", "neg")),
        _task(4, "d.txt", ("ann", None), ("bob", "neg")),
        _task(5, "e.txt", ("ann", "neg"), ("bob", "pos"), ("cat", "pos")),
        _task(6, "f.txt"),
    ]
    found = report(tasks, threshold=0.5)
    assert [e["item"] for e in found["inconsistent"]] == ["b.txt", "e.txt"]
    assert [(e["item"], e["reasons"]) for e in found["ambiguous"]] == [
        ("c.txt", ["marked unsure"]),
        ("d.txt", ["skipped"]),
        ("e.txt", ["near-tie"]),
    ]
    assert found["ambiguous"][1]["labels"] == [
        {"annotator": "ann", "label": "(skipped)"},
        {"annotator": "bob", "label": "neg"},
    ]
    assert (found["tasks"], found["annotated_tasks"], found["compared_tasks"]) == (6, 5, 3)
    # Pairable units: {pos,pos}, {pos,neg}, {neg,pos,pos}: n_pos = 5, n_neg = 2, n = 7;
    # o_pn = 1 (task 2) + 2 * (1/2) (task 5) = 2 -> alpha = 1 - 6 * 4 / (2 * 5 * 2) = -0.2.
    assert found["krippendorff_alpha"] == pytest.approx(-0.2)
    assert found["mean_observed_agreement"] == pytest.approx((1 + 0 + 1 / 3) / 3, abs=1e-4)


def test_a_higher_threshold_flags_partial_agreement():
    tasks = [_task(1, "a.txt", ("ann", "x"), ("bob", "x"), ("cat", "x"), ("dan", "y"))]
    assert report(tasks, threshold=0.5)["inconsistent"] == []
    assert [e["item"] for e in report(tasks, threshold=0.6)["inconsistent"]] == ["a.txt"]


def _choice(user: int, *choices: str, cancelled: bool = False) -> dict:
    result = [{"type": "choices", "value": {"choices": list(choices)}}] if choices else []
    return {"completed_by": user, "was_cancelled": cancelled, "result": result}


def test_label_studio_annotations_reduce_to_nominal_values():
    assert reduce_annotation(_choice(1, "pos"), USERS).value == '["pos"]'
    unsure = reduce_annotation(_choice(2, "unsure"), USERS)
    assert (unsure.value, unsure.unsure, unsure.annotator) == (None, True, "bob@example.com")
    assert reduce_annotation(_choice(1, cancelled=True), USERS).skipped
    spans = [
        {"type": "labels", "value": {"start": 6, "end": 11, "text": "Paris", "labels": ["LOC"]}},
        {"type": "labels", "value": {"start": 0, "end": 5, "text": "Alice", "labels": ["PER"]}},
    ]
    reversed_spans = list(reversed(spans))
    first = reduce_annotation({"completed_by": 1, "result": spans}, USERS, span_labelling=True)
    second = reduce_annotation(
        {"completed_by": 2, "result": reversed_spans}, USERS, span_labelling=True
    )
    assert first.value == second.value  # the same spans in another order agree
    nothing = reduce_annotation({"completed_by": 3, "result": []}, USERS, span_labelling=True)
    assert (nothing.value, nothing.skipped) == ("[]", False)


def test_consensus_needs_a_strict_leader():
    assert consensus(_task(1, "a", ("ann", "x"), ("bob", "x"), ("cat", "y"))) == "x"
    assert consensus(_task(1, "a", ("ann", "x"), ("bob", "y"))) is None


def test_exported_labels_are_one_sorted_json_line_per_annotated_task():
    tasks = [
        _task(2, "b.txt", ("bob", "neg"), ("ann", "neg")),
        _task(1, "a.txt", ("ann", "unsure"), ("bob", "pos")),
        _task(3, "c.txt"),
    ]
    assert labels_jsonl(tasks) == (
        '{"agreement":null,"annotations":[{"annotator":"ann","label":"unsure"},'
        '{"annotator":"bob","label":"pos"}],"item":"a.txt","label":"pos"}\n'
        '{"agreement":1.0,"annotations":[{"annotator":"ann","label":"neg"},'
        '{"annotator":"bob","label":"neg"}],"item":"b.txt","label":"neg"}\n'
    )


# --- the agreement gate ---------------------------------------------------------------------


def test_the_gate_passes_at_its_threshold_and_refuses_below_it():
    # alpha = 1 - 14 / 30 = 0.5333 (see the two coders' case above).
    tasks = [
        _task(1, "a.txt", ("ann", "a"), ("bob", "a")),
        _task(2, "b.txt", ("ann", "a"), ("bob", "b")),
        _task(3, "c.txt", ("ann", "b"), ("bob", "b")),
        _task(4, "d.txt", ("ann", "b"), ("bob", "b")),
    ]
    assert gate_refusal(tasks, 0.5) is None
    assert gate_refusal(tasks, 0.6) == (
        "Krippendorff's alpha 0.5333 is below the agreement threshold 0.6: annotators disagree "
        "on b.txt (consistency-report lists every task); fix them, or export with force=true"
    )


def test_the_gate_names_five_tasks_the_least_agreeing_first():
    tasks = [_task(i, f"{i}.txt", ("ann", "x"), ("bob", "y")) for i in range(1, 7)]
    tasks.append(_task(7, "0.txt", ("ann", "x"), ("bob", "x"), ("cat", "y")))
    refusal = gate_refusal(tasks, 0.8)
    assert refusal is not None
    assert "disagree on 1.txt, 2.txt, 3.txt, 4.txt, 5.txt and 2 more (" in refusal


def test_the_gate_lets_through_answers_that_never_disagree():
    # One label throughout: alpha is undefined, and nothing disagrees.
    tasks = [_task(1, "a.txt", ("ann", "a"), ("bob", "a")), _task(2, "b.txt", ("ann", "a"))]
    assert gate_refusal(tasks, 0.8) is None


def test_the_gate_waits_until_a_task_has_two_answers():
    tasks = [
        _task(1, "a.txt", ("ann", "a"), ("bob", "unsure")),
        _task(2, "b.txt", ("ann", "b")),
        _task(3, "c.txt"),
    ]
    assert gate_refusal(tasks, 0.8) == (
        "agreement cannot be measured against the threshold 0.8: no task has two annotations "
        "yet; have a second annotator label a.txt, b.txt, or export with force=true"
    )


def test_force_exports_below_the_gate_and_says_so():
    tasks = [_task(1, "a.txt", ("ann", "a"), ("bob", "b")), _task(2, "b.txt", ("ann", "b"))]
    with pytest.raises(LabellingError, match=r"below the agreement threshold 0\.8"):
        agreement(tasks, 0.8, force=False)
    forced = agreement(tasks, 0.8, force=True)
    assert (forced["forced"], forced["compared_tasks"]) == (True, 1)
    assert agreement(tasks, None, force=False)["forced"] is False  # no gate, nothing forced


def test_an_item_queued_by_several_batches_exports_its_newest_answers():
    tasks = [
        _task(10, "a.txt", ("ann", "y"), ("bob", "x")),
        _task(11, "a.txt", ("ann", "y"), ("bob", "y")),  # a later batch of the same item
        _task(12, "c.txt", ("ann", "z")),
        _task(13, "b.txt"),  # queued, not answered yet
    ]
    assert [t.task_id for t in newest_answers(tasks)] == [11, 12]
