"""The actions: the cases shared with labelling-k8s, and the jobs they start as systemd units."""

from __future__ import annotations

from tests.labelling_action_cases import ActionCases


class TestActions(ActionCases):
    """The shared action cases, on the machine charm."""
