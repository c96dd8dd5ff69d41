"""The MLOps stack's workload code: dataset versions in a DVC data registry, labelling, training.

It runs inside the workload containers and jobs (``mlops-workload`` CLI), never in
a charm hook: charms call it through Pebble exec and read its JSON output.
"""
