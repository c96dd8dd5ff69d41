"""Code shared by the MLOps stack's charms.

The modules a charm imports are copied into its packed tree (``lib/mlops_charms``) by
``tools/stage.py``; nothing here imports heavy libraries at module top,
because every Juju hook is a fresh Python process.
"""
