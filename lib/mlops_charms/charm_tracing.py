"""The charm's own traces: ops' first-party tracing (``ops[tracing]``), sent to Tempo.

Every hook, every event ops emits, every hook tool and Pebble call of the charm becomes a span,
pushed over ``charm-tracing`` (interface ``tracing``) once related; ``receive-ca-cert``
(``certificate_transfer``) gives the CA of a Tempo that serves HTTPS. Unrelated, spans are
buffered on the unit and dropped in time: nothing leaves it.
"""

from __future__ import annotations

import ops
from ops_tracing import Tracing

TRACING_ENDPOINT = "charm-tracing"
CA_ENDPOINT = "receive-ca-cert"


def trace_charm(charm: ops.CharmBase) -> Tracing:
    """Start tracing ``charm``; call it once, in the charm's ``__init__``."""
    return Tracing(charm, tracing_relation_name=TRACING_ENDPOINT, ca_relation_name=CA_ENDPOINT)
