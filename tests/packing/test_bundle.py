"""The bundles, with each overlay merged as Juju merges them, checked against the charms.

bundle.yaml (Kubernetes) with each overlay, bundle-machines.yaml (machines), and the two sides
of the hybrid set-up (bundle.yaml with overlays/hybrid.yaml, offering; bundle-hybrid-training.yaml,
consuming). Every application's charm is one of ours (its folder under charms/) or a Charmhub
charm this file describes; its options, resources, storage, placement and offered endpoints are
ones the charm and the bundle declare (options of the declared type), and every relation joins
two declared endpoints of one interface, a provider to a requirer, across models too: a
consumed offer (``saas``) has the endpoints of the application the other side offers.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundle.yaml"
MACHINE_BUNDLE = REPO_ROOT / "bundle-machines.yaml"
HYBRID_OVERLAY = REPO_ROOT / "overlays" / "hybrid.yaml"
HYBRID_TRAINING = REPO_ROOT / "bundle-hybrid-training.yaml"
# The Kubernetes side of the hybrid set-up, as its saas URLs name it: admin/<model>.<offer>.
HYBRID_K8S_MODEL = "admin/mlops"
OVERLAYS = sorted((REPO_ROOT / "overlays").glob("*.yaml"))
LOCAL_CHARM_PREFIX = "./build/"

# The Charmhub charms the overlays deploy, with what of their metadata the overlays use
# (read from their published charmcraft.yaml / metadata.yaml).
CHARMHUB: dict[str, dict[str, Any]] = {
    "postgresql-k8s": {
        "provides": {"database": {"interface": "postgresql_client"}},
        "config": {"options": {}},
    },
    "s3-integrator": {
        "provides": {"s3-credentials": {"interface": "s3"}},
        "config": {"options": {"bucket": {"type": "string"}}},
    },
    "self-signed-certificates": {
        "provides": {"certificates": {"interface": "tls-certificates"}},
        "config": {"options": {}},
    },
}
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "float": (int, float),
    "boolean": (bool,),
    "secret": (str,),
}


def merge(base: Any, overlay: Any) -> Any:
    """Juju's overlay merge of one application: maps key by key, ``null`` removes a key."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


def merged_bundle(bundle: dict, *overlays: dict) -> dict:
    """The bundle with ``overlays`` applied in order: applications merged, relations appended."""
    result = copy.deepcopy(bundle)
    for overlay in overlays:
        applications = result.setdefault("applications", {})
        removed = set()
        for name, application in (overlay.get("applications") or {}).items():
            if application is None:
                applications.pop(name, None)
                removed.add(name)
            else:
                applications[name] = merge(applications.get(name, {}), application)
        # A removed application's relations go with it.
        kept = [
            relation
            for relation in result.get("relations", [])
            if not {end.partition(":")[0] for end in relation} & removed
        ]
        result["relations"] = [*kept, *(overlay.get("relations") or [])]
        for name, saas in (overlay.get("saas") or {}).items():
            result.setdefault("saas", {})[name] = saas
    return result


def charm_metadata(charm: str) -> tuple[str, dict] | None:
    """(name, charmcraft.yaml) of an application's ``charm``; None for one not known."""
    if charm.startswith(LOCAL_CHARM_PREFIX):
        name = Path(charm).name.removesuffix(".charm")
        recipe = REPO_ROOT / "charms" / name / "charmcraft.yaml"
        return (name, yaml.safe_load(recipe.read_text())) if recipe.is_file() else None
    name = charm.removeprefix("ch:")
    return (name, CHARMHUB[name]) if name in CHARMHUB else None


def _endpoint(metadata: dict, endpoint: str) -> tuple[str, str] | None:
    for role in ("provides", "requires", "peers"):
        if endpoint in (metadata.get(role) or {}):
            return role, metadata[role][endpoint]["interface"]
    return None


def _application_problems(name: str, application: dict, metadata: dict) -> list[str]:
    problems = []
    options = (metadata.get("config") or {}).get("options") or {}
    for option, value in (application.get("options") or {}).items():
        if option not in options:
            problems.append(f"{name}: unknown option {option}")
        elif not isinstance(value, OPTION_TYPES[options[option]["type"]]) or (
            isinstance(value, bool) and options[option]["type"] in ("int", "float")
        ):
            problems.append(f"{name}: option {option} is not a {options[option]['type']}")
    for kind in ("resources", "storage"):
        for item in application.get(kind) or {}:
            if item not in (metadata.get(kind) or {}):
                problems.append(f"{name}: unknown {kind} {item}")
    for offer, spec in (application.get("offers") or {}).items():
        for endpoint in spec.get("endpoints") or []:
            if _endpoint(metadata, endpoint) is None:
                problems.append(f"{name}: offer {offer} names no endpoint {endpoint!r}")
    return problems


def offers(bundle: dict) -> dict[str, tuple[dict, list[str]]]:
    """The offers of ``bundle``: offer name -> (the offered charm's metadata, its endpoints)."""
    offered = {}
    for application in bundle["applications"].values():
        found = charm_metadata(application.get("charm", ""))
        for offer, spec in (application.get("offers") or {}).items():
            if found is not None:
                offered[offer] = (found[1], list(spec.get("endpoints") or []))
    return offered


def consumed(bundle: dict, offering: dict, model: str) -> dict[str, dict]:
    """The metadata of ``bundle``'s saas applications: the offered endpoints of ``offering``."""
    by_name = offers(offering)
    charms = {}
    for name, saas in (bundle.get("saas") or {}).items():
        model_url, _, offer = str(saas.get("url", "")).rpartition(".")
        if model_url != model or offer not in by_name:
            continue
        charms[name] = as_consumed(*by_name[offer])
    return charms


def as_consumed(metadata: dict, endpoints: list[str]) -> dict:
    """An offer as the consuming model sees it: the charm's offered endpoints only."""
    return {
        role: {e: v for e, v in (metadata.get(role) or {}).items() if e in endpoints}
        for role in ("provides", "requires")
    }


def _relation_problems(relation: list[str], charms: dict[str, dict]) -> list[str]:
    ends = []
    for end in relation:
        app, _, endpoint = end.partition(":")
        if app not in charms:
            return [f"{end}: no application {app}"]
        found = _endpoint(charms[app], endpoint)
        if not endpoint or found is None:
            return [f"{end}: {app} has no endpoint {endpoint!r}"]
        ends.append(found)
    (role_a, interface_a), (role_b, interface_b) = ends
    if interface_a != interface_b:
        return [f"{relation}: interfaces differ ({interface_a} vs {interface_b})"]
    if {role_a, role_b} != {"provides", "requires"}:
        return [f"{relation}: not a provider and a requirer ({role_a}, {role_b})"]
    return []


def bundle_problems(bundle: dict, saas: dict[str, dict] | None = None) -> list[str]:
    """Everything in ``bundle`` its charms (and ``saas``: the consumed offers) do not declare."""
    problems: list[str] = []
    charms: dict[str, dict] = dict(saas or {})
    for name in bundle.get("saas") or {}:
        if name not in charms:
            problems.append(f"{name}: the saas names no offer of the other side")
    machines = {str(machine) for machine in bundle.get("machines") or {}}
    for name, application in bundle["applications"].items():
        for placement in application.get("to") or []:
            if str(placement) not in machines:
                problems.append(f"{name}: placed on machine {placement}, which is not declared")
        found = charm_metadata(application.get("charm", ""))
        if found is None:
            problems.append(f"{name}: charm {application.get('charm')!r} is not known")
            continue
        charms[name] = found[1]
        problems += _application_problems(name, application, found[1])
    for relation in bundle.get("relations") or []:
        problems += _relation_problems(relation, charms)
    return problems


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_overlays_are_the_six_the_docs_name():
    assert [path.name for path in OVERLAYS] == [
        "data-centric.yaml",
        "gpu.yaml",
        "hybrid.yaml",
        "model-centric.yaml",
        "production.yaml",
        "tls.yaml",
    ]


def test_the_bundle_alone_matches_the_charms():
    assert bundle_problems(load(BUNDLE)) == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda path: path.stem)
def test_the_bundle_with_each_overlay_matches_the_charms(overlay: Path):
    assert bundle_problems(merged_bundle(load(BUNDLE), load(overlay))) == []


def test_the_bundle_with_production_and_gpu_together_matches_the_charms():
    overlays = [load(REPO_ROOT / "overlays" / name) for name in ("production.yaml", "gpu.yaml")]
    assert bundle_problems(merged_bundle(load(BUNDLE), *overlays)) == []


def test_the_machine_bundle_matches_the_charms():
    assert bundle_problems(load(MACHINE_BUNDLE)) == []


def charms_of(bundle: dict) -> set[str]:
    return {
        Path(application["charm"]).name.removesuffix(".charm")
        for application in bundle["applications"].values()
    }


def test_every_charm_of_the_repository_is_in_the_bundle_of_its_substrate():
    local = {path.parent.name for path in (REPO_ROOT / "charms").glob("*/charmcraft.yaml")}
    on_kubernetes, on_machines = charms_of(load(BUNDLE)), charms_of(load(MACHINE_BUNDLE))

    assert on_kubernetes | on_machines == local
    # The approach switch has no workload: the one charm of both.
    assert on_kubernetes & on_machines == {"mlops-approach"}
    assert all(name.endswith("-k8s") for name in on_kubernetes - {"mlops-approach"})
    assert {f"{name}-k8s" for name in on_machines - {"mlops-approach"}} == on_kubernetes - {
        "mlops-approach"
    }, "each service on machines is the sibling of one on Kubernetes"


@pytest.mark.parametrize("path", [BUNDLE, MACHINE_BUNDLE], ids=lambda path: path.stem)
def test_every_service_of_the_bundle_applies_the_approach(path: Path):
    """Each application whose charm requires mlops_approach is related to the switch."""
    bundle = load(path)
    requiring = set()
    for name, application in bundle["applications"].items():
        found = charm_metadata(application["charm"])
        assert found is not None, name
        requires = found[1].get("requires") or {}
        if any(e.get("interface") == "mlops_approach" for e in requires.values()):
            requiring.add(name)
    related = {
        end.split(":")[0]
        for relation in bundle["relations"]
        if "mlops-approach:mlops-approach" in relation
        for end in relation
        if end != "mlops-approach:mlops-approach"
    }
    assert requiring == related == set(bundle["applications"]) - {"mlops-approach"}


def test_the_machine_bundle_relates_the_services_as_the_kubernetes_bundle_does():
    def machine_name(end: str) -> str:
        return end.replace("-k8s:", ":")

    on_kubernetes = {frozenset(map(machine_name, r)) for r in load(BUNDLE)["relations"]}
    on_machines = {frozenset(relation) for relation in load(MACHINE_BUNDLE)["relations"]}

    assert on_machines == on_kubernetes


def hybrid_sides() -> tuple[dict, dict]:
    return merged_bundle(load(BUNDLE), load(HYBRID_OVERLAY)), load(HYBRID_TRAINING)


def test_the_hybrid_kubernetes_side_runs_no_training_and_offers_what_training_needs():
    kubernetes, machines = hybrid_sides()

    assert "training-k8s" not in kubernetes["applications"]
    assert not [r for r in kubernetes["relations"] if any("training-k8s" in e for e in r)]
    assert set(offers(kubernetes)) == {"data-versioning", "tracking", "mlops-approach"}
    assert bundle_problems(kubernetes) == []
    del machines


def test_the_hybrid_machine_side_consumes_the_kubernetes_offers():
    kubernetes, machines = hybrid_sides()
    saas = consumed(machines, kubernetes, HYBRID_K8S_MODEL)

    assert set(saas) == set(machines["saas"]) == set(offers(kubernetes))
    assert bundle_problems(machines, saas) == []


# The relation made by hand once both sides run (overlays/hybrid.yaml says how).
HYBRID_RELABEL = ["training:mlops-relabel", "labelling-k8s:mlops-relabel"]


def test_the_hybrid_relabel_relation_joins_training_s_offer_to_labelling():
    kubernetes, machines = hybrid_sides()
    training = as_consumed(*offers(machines)["training"])
    charms = {
        name: charm_metadata(app["charm"]) for name, app in kubernetes["applications"].items()
    }
    known = {name: found[1] for name, found in charms.items() if found is not None}

    assert _relation_problems(HYBRID_RELABEL, {**known, "training": training}) == []


def test_the_hybrid_sides_together_relate_training_as_the_kubernetes_bundle_does():
    """Every relation of training-k8s in bundle.yaml exists across the models, relabel too."""
    _kubernetes, machines = hybrid_sides()
    across = [*machines["relations"], HYBRID_RELABEL]

    def as_kubernetes(end: str) -> str:
        app, _, endpoint = end.partition(":")
        return f"{app if app in ('mlops-approach', 'labelling-k8s') else app + '-k8s'}:{endpoint}"

    expected = {
        frozenset(relation)
        for relation in load(BUNDLE)["relations"]
        if any(end.startswith("training-k8s:") for end in relation)
    }
    assert {frozenset(map(as_kubernetes, relation)) for relation in across} == expected


def test_a_saas_that_names_no_offer_is_caught():
    kubernetes, machines = hybrid_sides()
    machines["saas"]["tracking"]["url"] = "admin/mlops.mlflow"

    problems = bundle_problems(machines, consumed(machines, kubernetes, HYBRID_K8S_MODEL))

    assert "tracking: the saas names no offer of the other side" in problems


def test_an_offer_of_an_endpoint_the_charm_lacks_is_caught():
    overlay = {"applications": {"tracking-k8s": {"offers": {"t": {"endpoints": ["tracking"]}}}}}

    assert bundle_problems(merged_bundle(load(BUNDLE), overlay)) == [
        "tracking-k8s: offer t names no endpoint 'tracking'"
    ]


def test_a_placement_on_an_undeclared_machine_is_caught():
    bundle = load(MACHINE_BUNDLE)
    bundle["applications"]["training"]["to"] = ["7"]

    assert bundle_problems(bundle) == ["training: placed on machine 7, which is not declared"]


# --- the merge is Juju's ---------------------------------------------------------------------


def test_an_overlay_merges_options_key_by_key_and_null_removes():
    bundle = {
        "applications": {"a": {"charm": "x", "options": {"keep": 1, "change": 2, "drop": 3}}},
        "relations": [["a:x", "b:y"]],
    }
    overlay = {
        "applications": {"a": {"options": {"change": 20, "drop": None}}, "b": {"charm": "y"}},
        "relations": [["a:z", "b:z"]],
    }

    merged = merged_bundle(bundle, overlay)

    assert merged["applications"]["a"] == {"charm": "x", "options": {"keep": 1, "change": 20}}
    assert merged["applications"]["b"] == {"charm": "y"}
    assert merged["relations"] == [["a:x", "b:y"], ["a:z", "b:z"]]


def test_an_overlay_removes_an_application_with_null_and_its_relations():
    merged = merged_bundle(
        {"applications": {"a": {"charm": "x"}, "b": {}}, "relations": [["a:x", "b:x"]]},
        {"applications": {"a": None}},
    )

    assert merged["applications"] == {"b": {}}
    assert merged["relations"] == []


# --- the checks are not vacuous ---------------------------------------------------------------


def test_a_wrong_endpoint_is_caught():
    bundle = merged_bundle(
        load(BUNDLE),
        {"relations": [["training-k8s:mlops-data", "data-versioning-k8s:mlops-dataset"]]},
    )

    assert bundle_problems(bundle) == [
        "training-k8s:mlops-data: training-k8s has no endpoint 'mlops-data'"
    ]


def test_an_unknown_option_is_caught():
    overlay = {"applications": {"training-k8s": {"options": {"gpu": 1}}}}

    assert bundle_problems(merged_bundle(load(BUNDLE), overlay)) == [
        "training-k8s: unknown option gpu"
    ]


def test_an_option_of_the_wrong_type_is_caught():
    overlay = {"applications": {"mlops-approach": {"options": {"annotator-overlap": "2"}}}}

    assert bundle_problems(merged_bundle(load(BUNDLE), overlay)) == [
        "mlops-approach: option annotator-overlap is not a int"
    ]


def test_a_mismatched_interface_is_caught():
    overlay = {"relations": [["training-k8s:mlops-tracking", "data-versioning-k8s:mlops-dataset"]]}

    [problem] = bundle_problems(merged_bundle(load(BUNDLE), overlay))

    assert "interfaces differ (mlops_tracking vs mlops_dataset)" in problem


def test_two_requirers_are_caught():
    overlay = {"relations": [["training-k8s:mlops-dataset", "labelling-k8s:mlops-dataset"]]}

    [problem] = bundle_problems(merged_bundle(load(BUNDLE), overlay))

    assert "not a provider and a requirer (requires, requires)" in problem


def test_unknown_resources_and_storage_are_caught():
    overlay = {
        "applications": {"tracking-k8s": {"resources": {"image": "x"}, "storage": {"data": "1G"}}}
    }

    assert bundle_problems(merged_bundle(load(BUNDLE), overlay)) == [
        "tracking-k8s: unknown resources image",
        "tracking-k8s: unknown storage data",
    ]


def test_a_charm_folder_that_does_not_exist_is_caught():
    overlay = {"applications": {"tracking-k8s": {"charm": "./build/no-such-charm.charm"}}}

    assert bundle_problems(merged_bundle(load(BUNDLE), overlay))[0] == (
        "tracking-k8s: charm './build/no-such-charm.charm' is not known"
    )
