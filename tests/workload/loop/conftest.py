"""The loop's tests run where the cluster's Service names resolve (tests/workload/cluster_dns.py).

The run re-executes itself in a private mount namespace whose /etc/hosts maps the model's
Service names to this machine; as root only, elsewhere the tests skip.
"""

from __future__ import annotations

import sys

import pytest

from tests.workload import cluster_dns
from tests.workload.loop.stack import APPS, MODEL

cluster_dns.reexec_with_cluster_dns(
    cluster_dns.service_names(MODEL, APPS), [sys.executable, "-m", "pytest", *sys.argv[1:]]
)
if not cluster_dns.inside():  # pragma: no cover
    pytest.skip("the cluster's DNS needs a mount namespace: run as root", allow_module_level=True)
