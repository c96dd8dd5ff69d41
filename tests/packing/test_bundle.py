"""bundle.yaml with each overlay, merged as Juju merges them, checked against the charms.

Every application's charm is one of ours (its folder under charms/) or a Charmhub charm this
file describes; its options, resources and storage are ones the charm declares (options of the
declared type), and every relation joins two declared endpoints of one interface, a provider
to a requirer.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundle.yaml"
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
        for name, application in (overlay.get("applications") or {}).items():
            if application is None:
                applications.pop(name, None)
            else:
                applications[name] = merge(applications.get(name, {}), application)
        result["relations"] = [*result.get("relations", []), *(overlay.get("relations") or [])]
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
    return problems


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


def bundle_problems(bundle: dict) -> list[str]:
    """Everything in ``bundle`` that the charms it deploys do not declare."""
    problems: list[str] = []
    charms: dict[str, dict] = {}
    for name, application in bundle["applications"].items():
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


def test_the_overlays_are_the_four_the_docs_name():
    assert [path.name for path in OVERLAYS] == [
        "data-centric.yaml",
        "gpu.yaml",
        "model-centric.yaml",
        "production.yaml",
    ]


def test_the_bundle_alone_matches_the_charms():
    assert bundle_problems(load(BUNDLE)) == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda path: path.stem)
def test_the_bundle_with_each_overlay_matches_the_charms(overlay: Path):
    assert bundle_problems(merged_bundle(load(BUNDLE), load(overlay))) == []


def test_the_bundle_with_production_and_gpu_together_matches_the_charms():
    overlays = [load(REPO_ROOT / "overlays" / name) for name in ("production.yaml", "gpu.yaml")]
    assert bundle_problems(merged_bundle(load(BUNDLE), *overlays)) == []


def test_every_charm_of_the_repository_is_in_the_bundle():
    deployed = {
        Path(application["charm"]).name.removesuffix(".charm")
        for application in load(BUNDLE)["applications"].values()
    }
    # The machine charms are deployed in a machine model (their READMEs), not in this bundle.
    local = {path.parent.name for path in (REPO_ROOT / "charms").glob("*/charmcraft.yaml")}
    assert local - deployed == {"training", "tracking"}


def test_every_service_of_the_bundle_applies_the_approach():
    """Each application whose charm requires mlops_approach is related to the switch."""
    bundle = load(BUNDLE)
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


def test_an_overlay_removes_an_application_with_null():
    merged = merged_bundle({"applications": {"a": {"charm": "x"}}}, {"applications": {"a": None}})

    assert merged["applications"] == {}


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
