"""The logs of every Pebble service of a workload container, its servers' and its jobs', to COS.

Pebble forwards them itself; nothing runs in the container for it. Two relations name where:

- ``send-otlp`` (interface ``otlp``; COS: the OpenTelemetry Collector): its endpoints are read
  with the published ``charmlibs-interfaces-otlp``, which also publishes our Juju topology and
  the generic alert rules. Pebble's ``opentelemetry`` target posts OTLP/HTTP JSON to
  ``<endpoint>/v1/logs``.
- ``logging`` (interface ``loki_push_api``; COS Lite: Loki or a Grafana Agent): each provider
  unit publishes ``endpoint``, the JSON ``{"url": "http://…/loki/api/v1/push"}``; Pebble's
  ``loki`` target posts there.

Every target takes ``all`` services, so a job's one-shot service (``<slot>-job``) is forwarded
too, with the Juju topology as labels. A target whose relation is gone is turned off
(``-all``): a layer cannot remove a log target from Pebble's plan.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import ops
from charmlibs.interfaces.otlp import OtlpRequirer
from cosl.juju_topology import JujuTopology

if TYPE_CHECKING:
    from ops.pebble import LogTargetDict

logger = logging.getLogger(__name__)

OTLP_ENDPOINT = "send-otlp"
LOKI_ENDPOINT = "logging"
LAYER = "log-forwarding"
# Our targets' names start so; a target of another layer is left alone.
_PREFIXES = ("otlp-", "loki-")


def _http_url(value: object) -> str | None:
    """``value`` if it is an http(s) URL with a host, else None."""
    if not isinstance(value, str):
        return None
    parts = urllib.parse.urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def _loki_url(endpoint: str | None) -> str | None:
    """The push URL in a loki_push_api unit's ``endpoint`` field, if it is one."""
    try:
        url = json.loads(endpoint or "null")
    except ValueError:
        return None
    return _http_url(url.get("url")) if isinstance(url, dict) else None


class LogForwarding(ops.Object):
    """Keeps the container's Pebble log targets equal to the charm's log relations.

    It observes its own events, as the published COS libraries do: the two relations, the
    container's pebble-ready (a new Pebble has an empty plan) and upgrade-charm.
    """

    def __init__(self, charm: ops.CharmBase, container_name: str):
        super().__init__(charm, LAYER)
        self._charm = charm
        self._container = charm.unit.get_container(container_name)
        self._otlp = OtlpRequirer(charm, OTLP_ENDPOINT, protocols=["http"], telemetries=["logs"])
        for endpoint in (OTLP_ENDPOINT, LOKI_ENDPOINT):
            relation_events = charm.on[endpoint]
            for event in (
                relation_events.relation_changed,
                relation_events.relation_departed,
                relation_events.relation_broken,
            ):
                self.framework.observe(event, self._apply)
        self.framework.observe(charm.on[OTLP_ENDPOINT].relation_joined, self._publish)
        self.framework.observe(charm.on.leader_elected, self._publish)
        self.framework.observe(charm.on[container_name].pebble_ready, self._apply)
        self.framework.observe(charm.on.upgrade_charm, self._apply)

    def _labels(self) -> dict[str, str]:
        # The labels COS's own log forwarders set, so COS's dashboards find these logs.
        topology = JujuTopology.from_charm(self._charm)
        return {
            "product": "Juju",
            "charm": topology.charm_name or "",
            "juju_model": topology.model,
            "juju_model_uuid": topology.model_uuid,
            "juju_application": topology.application,
            "juju_unit": topology.unit or "",
        }

    def targets(self) -> dict[str, LogTargetDict]:
        """The log targets the relations ask for now, by name; bad remote data is skipped."""
        labels = self._labels()
        wanted: dict[str, LogTargetDict] = {}
        try:
            otlp = self._otlp.endpoints
        except ValueError as error:  # data that is not JSON: the library does not catch it
            logger.warning("%s: unreadable endpoints: %s", OTLP_ENDPOINT, error)
            otlp = {}
        for relation_id, endpoint in sorted(otlp.items()):
            location = _http_url(endpoint.endpoint)
            if location is None:
                logger.warning("%s: not an http(s) URL: %r", OTLP_ENDPOINT, endpoint.endpoint)
                continue
            wanted[f"otlp-{relation_id}"] = {
                "override": "replace",
                "type": "opentelemetry",
                "location": location,
                "services": ["all"],
                "labels": labels,
            }
        for relation in self._charm.model.relations[LOKI_ENDPOINT]:
            for unit in sorted(relation.units, key=lambda unit: unit.name):
                location = _loki_url(relation.data[unit].get("endpoint"))
                if location is None:
                    continue
                name = f"loki-{relation.id}-{unit.name.replace('/', '-')}"
                wanted[name] = {
                    "override": "replace",
                    "type": "loki",
                    "location": location,
                    "services": ["all"],
                    "labels": labels,
                }
        return wanted

    def _apply(self, _event: ops.EventBase) -> None:
        self._publish(_event)
        if not self._container.can_connect():
            return  # its pebble-ready applies them
        try:
            planned = self._container.get_plan().log_targets
        except ops.pebble.ConnectionError:
            return
        layer_targets: dict[str, Any] = dict(self.targets())
        for name, target in planned.items():
            if name.startswith(_PREFIXES) and name not in layer_targets:
                layer_targets[name] = {
                    "override": "replace",
                    "type": target.type,
                    "location": target.location,
                    "services": ["-all"],
                }
        current = {
            name: _without_override(dict(planned[name].to_dict()))
            for name in layer_targets
            if name in planned
        }
        if current == {name: _without_override(t) for name, t in layer_targets.items()}:
            return  # no change: Pebble's plan is not touched
        self._container.add_layer(LAYER, {"log-targets": layer_targets}, combine=True)

    def _publish(self, _event: ops.EventBase) -> None:
        """The leader's topology and generic rules, for the collector (the library's data)."""
        if self._charm.unit.is_leader():
            self._otlp.publish()


def _without_override(target: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in target.items() if key != "override"}
