"""Tests for the ingress v2 requirer, with databags shaped like the interface's published schema.

Shapes come from canonical/charm-relation-interfaces ``interfaces/ingress/v2`` (README.md and
schema.py): every value JSON-encoded on its own; app data ``model``/``name``/``port``; unit
data ``host``; provider app data ``ingress`` = ``'{"url": "..."}'``.
"""

from __future__ import annotations

import json
import socket

import ops
import pytest
from ops import testing

from mlops_charms.databags import write_databag
from mlops_charms.ingress import (
    IngressRequirer,
    ProviderAppData,
    RequirerAppData,
    RequirerUnitData,
    read_provider_url,
)

FQDN = "tracking-0.tracking-endpoints.mlops.svc.cluster.local"
SCHEMA_PROVIDER_EXAMPLE = {"ingress": '{"url": "http://foo.bar:80/model_name-app_name/0"}'}

META = {
    "name": "tracking",
    "requires": {"ingress": {"interface": "ingress", "limit": 1}},
}


class IngressUserCharm(ops.CharmBase):
    """The smallest charm that uses the requirer the way our charms do."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.ingress = IngressRequirer(self, port=5000)
        for event in (
            self.on.config_changed,
            self.on.ingress_relation_joined,
            self.on.ingress_relation_changed,
            self.on.ingress_relation_broken,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)

    def _reconcile(self, _event: ops.EventBase):
        self.ingress.publish()

    def _on_collect_status(self, event: ops.CollectStatusEvent):
        if problem := self.ingress.problem:
            event.add_status(ops.BlockedStatus(problem))
        elif url := self.ingress.url:
            event.add_status(ops.ActiveStatus(url))
        else:
            event.add_status(ops.WaitingStatus("waiting for ingress"))


@pytest.fixture(autouse=True)
def fqdn(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(socket, "getfqdn", lambda name="": FQDN)


@pytest.fixture
def ctx() -> testing.Context[IngressUserCharm]:
    return testing.Context(IngressUserCharm, meta=META)


def ingress_relation(**kwargs) -> testing.Relation:
    return testing.Relation(
        endpoint="ingress", interface="ingress", remote_app_name="traefik", **kwargs
    )


def ingress_network(*addresses: str) -> testing.Network:
    return testing.Network(
        "ingress",
        bind_addresses=[testing.BindAddress([testing.Address(a) for a in addresses])]
        if addresses
        else [],
    )


def state(*, leader: bool = True, relations=(), networks=()) -> testing.State:
    return testing.State(
        leader=leader,
        relations=set(relations),
        networks=set(networks),
        model=testing.Model(name="mlops"),
    )


# --- publishing -------------------------------------------------------------------------------


def test_leader_publishes_app_data_with_every_value_json_encoded(ctx):
    relation = ingress_relation()

    out = ctx.run(ctx.on.relation_joined(relation), state(relations=[relation]))

    assert out.get_relation(relation.id).local_app_data == {
        "model": '"mlops"',
        "name": '"tracking"',
        "port": "5000",
        "strip-prefix": "true",
        "redirect-https": "false",
        "scheme": '"http"',
    }


def test_every_unit_publishes_its_fqdn_and_bind_address(ctx):
    relation = ingress_relation()
    s = state(relations=[relation], networks=[ingress_network("10.1.2.3")])

    out = ctx.run(ctx.on.relation_joined(relation), s)

    unit_data = out.get_relation(relation.id).local_unit_data
    assert unit_data["host"] == json.dumps(FQDN)
    assert unit_data["ip"] == '"10.1.2.3"'


def test_non_leader_publishes_only_unit_data(ctx):
    relation = ingress_relation()

    out = ctx.run(ctx.on.relation_joined(relation), state(leader=False, relations=[relation]))

    published = out.get_relation(relation.id)
    assert published.local_app_data == {}
    assert published.local_unit_data["host"] == json.dumps(FQDN)


def test_unit_without_bind_address_publishes_host_and_drops_stale_ip(ctx):
    relation = ingress_relation(local_unit_data={"host": json.dumps(FQDN), "ip": '"10.9.9.9"'})
    s = state(relations=[relation], networks=[ingress_network()])

    out = ctx.run(ctx.on.relation_changed(relation), s)

    unit_data = out.get_relation(relation.id).local_unit_data
    assert unit_data["host"] == json.dumps(FQDN)
    assert "ip" not in unit_data


def test_published_data_reads_back_as_the_schema_types(ctx):
    relation = ingress_relation()

    out = ctx.run(ctx.on.relation_joined(relation), state(relations=[relation]))

    published = out.get_relation(relation.id)
    app = {key: json.loads(value) for key, value in published.local_app_data.items()}
    # schema.py: model Json[str], port Json[int], name Json[str]; unit host Json[str]
    assert (app["model"], app["name"], app["port"]) == ("mlops", "tracking", 5000)
    assert json.loads(published.local_unit_data["host"]) == FQDN


def test_republishing_unchanged_data_writes_nothing(ctx, monkeypatch: pytest.MonkeyPatch):
    relation = ingress_relation()
    first = ctx.run(ctx.on.relation_joined(relation), state(relations=[relation]))
    writes: list[dict[str, str]] = []
    monkeypatch.setattr(
        ops.model.RelationDataContent, "_commit", lambda self, data: writes.append(dict(data))
    )

    with ctx(ctx.on.update_status(), first) as manager:
        changed = manager.charm.ingress.publish()

    assert changed is False
    assert writes == []


def test_changed_port_rewrites_only_the_port(ctx, monkeypatch: pytest.MonkeyPatch):
    relation = ingress_relation()
    first = ctx.run(ctx.on.relation_joined(relation), state(relations=[relation]))
    real_commit = ops.model.RelationDataContent._commit
    writes: list[dict[str, str]] = []

    def recording_commit(self, data):
        writes.append(dict(data))
        real_commit(self, data)

    monkeypatch.setattr(ops.model.RelationDataContent, "_commit", recording_commit)

    with ctx(ctx.on.update_status(), first) as manager:
        changed = manager.charm.ingress.publish(port=8080)
        out = manager.run()

    assert changed is True
    assert writes == [{"port": "8080"}]
    assert out.get_relation(relation.id).local_app_data["port"] == "8080"


def test_out_of_range_port_is_refused_before_anything_is_written(ctx):
    relation = ingress_relation()

    with ctx(ctx.on.update_status(), state(relations=[relation])) as manager:
        with pytest.raises(ValueError, match="port"):
            manager.charm.ingress.publish(port=70000)
        out = manager.run()

    assert out.get_relation(relation.id).local_app_data == {}


# --- reading the provider's URL ---------------------------------------------------------------


def test_url_is_read_from_the_providers_app_data(ctx):
    relation = ingress_relation(remote_app_data=SCHEMA_PROVIDER_EXAMPLE)

    with ctx(ctx.on.relation_changed(relation), state(relations=[relation])) as manager:
        url, problem = manager.charm.ingress.url, manager.charm.ingress.problem
        out = manager.run()

    assert url == "http://foo.bar:80/model_name-app_name/0"
    assert problem is None
    assert out.unit_status == testing.ActiveStatus("http://foo.bar:80/model_name-app_name/0")


def test_https_url_is_accepted():
    url, problem = read_provider_url({"ingress": '{"url": "https://mlops.example.com/"}'})

    assert (url, problem) == ("https://mlops.example.com/", None)


MALFORMED_PROVIDER_DATA = {
    "not json": {"ingress": "{url: http://foo.bar/}"},
    "json but not an object": {"ingress": '"http://foo.bar/"'},
    "no url": {"ingress": "{}"},
    "url not a string": {"ingress": '{"url": 42}'},
    "url not http": {"ingress": '{"url": "ftp://foo.bar/model-app"}'},
    "url without host": {"ingress": '{"url": "http:///model-app"}'},
    "url not a url": {"ingress": '{"url": "foo.bar"}'},
    "port out of range": {"ingress": '{"url": "http://foo.bar:99999/model-app"}'},
    "port not a number": {"ingress": '{"url": "http://foo.bar:http/model-app"}'},
    "unclosed ipv6 bracket": {"ingress": '{"url": "http://[fd00::1/model-app"}'},
}


def provider_url(url: str) -> dict[str, str]:
    return {"ingress": json.dumps({"url": url})}


# The host reaches MLflow's --allowed-hosts and consumers' URLs: nothing that widens it.
HOSTS_THAT_WIDEN = {
    "wildcard": "https://*/",
    "wildcard subdomain": "https://*.example.com/model-app",
    "list": "http://a,b/",
    "space": "http://foo bar/model-app",
    "user": "http://user@foo.bar/model-app",
    "user and password": "http://user:pw@foo.bar/model-app",
    "empty user": "http://@foo.bar/model-app",
    "label with leading dash": "http://-foo.bar/model-app",
    "underscore": "http://foo_bar.example/model-app",
}


@pytest.mark.parametrize(
    "databag", MALFORMED_PROVIDER_DATA.values(), ids=MALFORMED_PROVIDER_DATA.keys()
)
def test_malformed_provider_data_is_a_problem_not_an_exception(databag):
    url, problem = read_provider_url(databag)

    assert url is None
    assert problem is not None
    assert problem.startswith("ingress provider data")


@pytest.mark.parametrize("url", HOSTS_THAT_WIDEN.values(), ids=HOSTS_THAT_WIDEN.keys())
def test_url_whose_host_is_no_dns_name_or_ip_address_is_a_problem(url):
    found, problem = read_provider_url(provider_url(url))

    assert found is None
    assert problem == (
        "ingress provider data is malformed: "
        "ingress.url: Value error, url's host is not a DNS name or an IP address"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/mlops-tracking",
        "http://10.1.2.3:8080/mlops-tracking",
        "http://[fd00::1]:8080/mlops-tracking",
        "https://mlops.example.com./mlops-tracking",
        "http://traefik.mlops.svc.cluster.local:80/mlops-tracking",
        "https://MLOps.Example.COM/",
    ],
)
def test_url_with_a_dns_name_or_an_ip_address_is_read(url):
    assert read_provider_url(provider_url(url)) == (url, None)


def test_bad_port_is_a_problem_that_says_the_url_is_not_valid():
    _, problem = read_provider_url(provider_url("http://foo.bar:99999/model-app"))

    assert (
        problem
        == "ingress provider data is malformed: ingress.url: Value error, url is not a valid URL"
    )


def test_malformed_provider_data_blocks_the_charm_in_a_hook(ctx):
    relation = ingress_relation(remote_app_data={"ingress": '{"url": "ftp://foo.bar/x"}'})

    out = ctx.run(ctx.on.relation_changed(relation), state(relations=[relation]))

    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "url" in out.unit_status.message
    # The requirer still publishes its own side: the provider may fix its data later.
    assert out.get_relation(relation.id).local_app_data["port"] == "5000"


def test_provider_without_data_yet_is_waiting_not_a_problem(ctx):
    relation = ingress_relation(remote_app_data={})

    with ctx(ctx.on.relation_joined(relation), state(relations=[relation])) as manager:
        url, problem = manager.charm.ingress.url, manager.charm.ingress.problem
        out = manager.run()

    assert (url, problem) == (None, None)
    assert out.unit_status == testing.WaitingStatus("waiting for ingress")


def test_no_relation_means_no_url_and_no_problem(ctx):
    with ctx(ctx.on.config_changed(), state()) as manager:
        assert manager.charm.ingress.relation is None
        assert manager.charm.ingress.url is None
        assert manager.charm.ingress.problem is None
        assert manager.charm.ingress.publish() is False


def test_broken_relation_gives_no_url(ctx):
    relation = ingress_relation(remote_app_data=SCHEMA_PROVIDER_EXAMPLE)

    with ctx(ctx.on.relation_broken(relation), state(relations=[relation])) as manager:
        url = manager.charm.ingress.url
        out = manager.run()

    assert url is None
    assert out.unit_status == testing.WaitingStatus("waiting for ingress")


# --- the wire models against the schema's examples --------------------------------------------


def test_requirer_models_read_the_schema_readme_example():
    app = RequirerAppData.from_databag(
        {"name": '"app_name"', "model": '"model_name"', "port": "4242"}
    )
    unit = RequirerUnitData.from_databag({"host": '"hostname"'})

    assert (app.name, app.model, app.port) == ("app_name", "model_name", 4242)
    assert app.strip_prefix is None  # optional on the wire
    assert unit.host == "hostname"
    assert unit.ip is None


def test_requirer_app_model_round_trips_the_dashed_keys():
    wire: dict[str, str] = {}
    write_databag(wire, RequirerAppData(port=80, strip_prefix=False, redirect_https=True))

    assert wire == {"port": "80", "strip-prefix": "false", "redirect-https": "true"}
    assert RequirerAppData.from_databag(wire).redirect_https is True


def test_provider_model_reads_the_schema_example():
    data = ProviderAppData.from_databag(SCHEMA_PROVIDER_EXAMPLE)

    assert data.ingress is not None
    assert data.ingress.url == "http://foo.bar:80/model_name-app_name/0"


@pytest.mark.parametrize(
    ("databag", "bad_key"),
    [
        ({"port": "not-json"}, "'port'"),
        ({"port": "0"}, "port"),
        ({"scheme": '"ftp"'}, "scheme"),
        ({"ip": '"not-an-ip"'}, "ip"),
    ],
)
def test_bad_requirer_data_is_refused_naming_the_key(databag, bad_key):
    model = RequirerUnitData if "ip" in databag else RequirerAppData

    with pytest.raises(ValueError, match=bad_key):
        model.from_databag(databag)
