"""Code shared by the MLOps stack's charms.

Every module here is copied into each charm's packed tree (``lib/mlops_charms``)
by ``tools/stage_charm.py``; nothing here imports heavy libraries at module top,
because every Juju hook is a fresh Python process.
"""
