"""Labelling: Label Studio projects fed by dataset versions, and their annotations' quality.

``import_version`` turns a version's items into a project's tasks; ``export_annotations``
turns the annotations into a new dataset version whose parent is the imported one;
``consistency_report`` measures agreement between annotators and lists the inconsistent and
ambiguous tasks. Everything runs in the labelling workload (``mlops-workload labelling``),
never in a charm hook.
"""
