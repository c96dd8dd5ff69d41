"""The data registry the charm runs phones no one: proven in a loopback-only namespace.

The charm runs its registry on a real Pebble (harness.py) that sits inside a network namespace
with only loopback, every ``connect()`` traced (tests/workload/netns.py): the charm's bootstrap
(``git init``, ``dvc init``), Apache + git http-backend and the rclone S3 servers. In the same
namespace, through ``pebble exec``: the charm's ``mlops-workload dataset create-version`` (its
exec environment), a reader's ``git clone`` + ``dvc pull`` and a writer's ``dvc push`` + ``git
push`` of a new version. Once Pebble and every process it ran have ended, the trace must hold
no ``connect()`` beyond this host. The consumers are the users' git and dvc, not the workload:
DVC's analytics are off for them, so that what the trace shows is the registry's.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workload import pebble_backed
from tests.workload.netns import (
    IsolatedPebble,
    exec_in,
    probe_outside_connect,
    run_isolated_pebble,
)
from tests.workload.registry.harness import (
    VENV_BIN,
    RunningRegistry,
    User,
    chown_tree,
    make_files,
    start_registry,
)

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def isolated_registry() -> Iterator[RunningRegistry]:
    """The harness's registry, with the isolated, traced Pebble in place of the plain one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pebble_backed, "run_pebble", run_isolated_pebble)
        with start_registry() as registry:
            yield registry


def consumer(running: RunningRegistry, user: User, script: str, workdir: Path) -> str:
    """Run a consumer's shell ``script`` (git and dvc) in the namespace; return its output."""
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    environment = {
        "HOME": str(home),
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": user.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": user.s3_secret_key,
        "DVC_NO_ANALYTICS": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "consumer",
        "GIT_AUTHOR_EMAIL": "consumer@example.invalid",
        "GIT_COMMITTER_NAME": "consumer",
        "GIT_COMMITTER_EMAIL": "consumer@example.invalid",
    }
    result = exec_in(
        running.daemon,
        ["/bin/sh", "-c", f"set -eu\n{script}"],
        environment,
        working_dir=str(workdir),
        timeout=300,
    )
    assert result.exit_code == 0, result.stderr[-3000:]
    return result.stdout


def test_the_registry_versions_and_serves_data_without_reaching_outside(tmp_path: Path):
    with isolated_registry() as running:
        source = running.source_dir("offline")
        files = make_files(source, 5, 512, "offline")
        chown_tree(source)
        created = running.workload("create-version", "--source", str(source))
        assert created.exit_code == 0, created.stderr
        version = created.json["version"]

        reader, writer = running.reader, running.labelling
        pulled = consumer(
            running,
            reader,
            f"git clone --quiet {shlex.quote(running.url_for(reader))} checkout\n"
            f"cd checkout\ngit checkout --quiet {shlex.quote(version)}\ndvc pull --quiet\n"
            "find data -type f | sort",
            tmp_path / "reader",
        )
        pushed = consumer(
            running,
            writer,
            f"git clone --quiet {shlex.quote(running.url_for(writer))} checkout\n"
            "cd checkout\ndvc pull --quiet\necho labelled > data/labels.txt\n"
            "dvc add --quiet data\ndvc push --quiet\n"
            "git commit --quiet -am 'labels'\ngit tag offline-labels\n"
            "git push --quiet origin HEAD:main offline-labels\ngit ls-remote --tags origin",
            tmp_path / "writer",
        )
        daemon = running.daemon

    assert pulled.split() == sorted(f"data/{name}" for name in files)
    assert "refs/tags/offline-labels" in pushed
    # Pebble and everything it ran have ended: from the charm's bootstrap to what the servers
    # and the commands sent on their way out (DVC reports from a detached process), every
    # attempt is in the trace.
    assert isinstance(daemon, IsolatedPebble)
    daemon.assert_nothing_left()


def test_the_trace_catches_a_process_that_connects_outside(tmp_path: Path):
    """The tracer the three workloads' tests share (tests/workload/netns.py) is not blind."""
    with run_isolated_pebble(tmp_path) as daemon:
        probe_outside_connect(daemon)

    found = daemon.outside_connections()
    assert [(c.address, c.port, c.name) for c in found] == [
        ("192.0.2.1", 443, None),
        (found[-1].address, 443, "telemetry.example.com"),
    ], found
