"""The data registry for real: versions cut through Pebble exec, pulled by plain git + dvc.

One registry per module, run by the charm on a real Pebble (Apache + git http-backend and the
S3 front, two rclone S3 servers); ``v1`` and ``v2`` are cut once and every test checks one
behaviour on top of them. Consumers use nothing but what the charm published: a clone's
committed DVC config is all ``dvc pull`` and ``dvc push`` need.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ops import pebble

import registry_layer  # on sys.path from the harness, which conftest.py imports first
from tests.workload.registry.harness import (
    Consumer,
    RunningRegistry,
    User,
    chown_tree,
    dvc,
    git,
    make_files,
    read_tree,
    registry,
    wait_for,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Versions:
    """The two versions every test may rely on, and their exact content."""

    v1: dict[str, bytes]
    v2: dict[str, bytes]
    v1_result: dict
    v2_result: dict


def clone(running: RunningRegistry, user: Consumer, dest: Path) -> Path:
    """Clone as a consumer does: the URL its relation names, the keys its secret holds."""
    git("clone", "--quiet", running.url_for(user), str(dest))
    return dest


def pull(checkout: Path, user: User, rev: str) -> dict[str, bytes]:
    git("checkout", "--quiet", rev, cwd=checkout)
    result = dvc("pull", "--quiet", cwd=checkout, user=user)
    assert result.returncode == 0, result.stderr
    return read_tree(checkout / "data")


@pytest.fixture(scope="module")
def versions(running_registry: RunningRegistry) -> Versions:
    source = running_registry.source_dir("upload")
    v1 = make_files(source, 30, 2048, "v1")
    chown_tree(source)
    first = running_registry.workload(
        "create-version",
        "--source",
        str(source),
        "--message",
        "first cut",
        "--approach",
        "data-centric",
    )
    assert first.exit_code == 0, first.stderr
    # v2: one file changed, one removed, one added.
    (source / "part-0/item-0000.bin").write_bytes(b"relabelled")
    (source / "part-1/item-0001.bin").unlink()
    (source / "part-2/new.bin").write_bytes(b"x" * 5000)
    chown_tree(source)
    v2 = dict(v1)
    v2["part-0/item-0000.bin"] = b"relabelled"
    del v2["part-1/item-0001.bin"]
    v2["part-2/new.bin"] = b"x" * 5000
    second = running_registry.workload("create-version", "--source", str(source))
    assert second.exit_code == 0, second.stderr
    return Versions(v1=v1, v2=v2, v1_result=first.json, v2_result=second.json)


@pytest.fixture
def reader_checkout(running_registry: RunningRegistry, tmp_path: Path) -> Iterator[Path]:
    yield clone(running_registry, running_registry.reader, tmp_path / "consumer")


def test_consumer_pulls_exact_bytes_of_v1_and_v2(versions, running_registry, reader_checkout):
    assert pull(reader_checkout, running_registry.reader, "v1") == versions.v1
    assert pull(reader_checkout, running_registry.reader, "v2") == versions.v2


def test_dvc_get_with_rev_reads_a_version_without_a_clone(versions, running_registry, tmp_path):
    out = tmp_path / "got"
    result = dvc(
        "get",
        running_registry.url_for(running_registry.reader),
        "data",
        "--rev",
        "v1",
        "-o",
        str(out),
        cwd=tmp_path,
        user=running_registry.reader,
    )
    assert result.returncode == 0, result.stderr
    assert read_tree(out) == versions.v1


def test_version_metadata_is_recorded_in_the_tag(versions, running_registry):
    listed = running_registry.workload("list-versions")
    assert listed.exit_code == 0, listed.stderr
    by_name = {v["version"]: v for v in listed.json["versions"]}
    v1, v2 = by_name["v1"], by_name["v2"]
    assert (v1["parent"], v1["source"], v1["approach"], v1["message"]) == (
        None,
        "upload",
        "data-centric",
        "first cut",
    )
    assert (v1["files"], v1["bytes"]) == (30, 30 * 2048)
    assert v2["parent"] == "v1"
    assert (v2["files"], v2["bytes"]) == (30, 28 * 2048 + len(b"relabelled") + 5000)
    assert v1["annotated"] and v1["managed"]
    assert versions.v2_result["commit"] == v2["commit"]


def test_diff_versions_names_paths_and_bytes(versions, running_registry):
    result = running_registry.workload("diff-versions", "v1", "v2")
    assert result.exit_code == 0, result.stderr
    diff = result.json
    assert diff["added"] == ["data/part-2/new.bin"]
    assert diff["removed"] == ["data/part-1/item-0001.bin"]
    assert diff["modified"] == ["data/part-0/item-0000.bin"]
    assert (diff["added_bytes"], diff["removed_bytes"], diff["modified_bytes"]) == (
        5000,
        2048,
        len(b"relabelled"),
    )


def test_wrong_password_is_refused(versions, running_registry, tmp_path):
    out = git(
        "ls-remote", running_registry.url_for(running_registry.reader, "not-it"), check=False
    )
    assert "401" in out or "Authentication failed" in out
    anonymous = f"http://127.0.0.1:{running_registry.settings.git_port}/registry.git/info/refs"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous + "?service=git-upload-pack", timeout=10)
    assert refused.value.code == 401


def test_read_only_user_cannot_push_a_tag(versions, running_registry, tmp_path):
    """Refused with 403: git keeps the reader's stored credentials (a 401 would erase them)."""
    reader = running_registry.reader
    store = tmp_path / "credentials"
    store.write_text(running_registry.url_for(reader) + "\n")
    helper = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper"}
    helper["GIT_CONFIG_VALUE_0"] = f"store --file={store}"
    checkout = tmp_path / "c"
    git("clone", "--quiet", reader.registry_url, str(checkout), env=helper)
    git("tag", "v99", "v1", cwd=checkout)
    out = git("push", "origin", "v99", cwd=checkout, check=False, env=helper)
    assert "v99" not in running_registry.tag_names()
    assert "403" in out and "Authentication failed" not in out, out
    # git wrote the working credential back after the clone; the refused push kept it.
    assert f"//{reader.username}:{reader.password}@" in store.read_text()


def test_read_only_user_cannot_write_to_the_dvc_remote(
    versions, running_registry, reader_checkout
):
    git("checkout", "--quiet", "v2", cwd=reader_checkout)
    (reader_checkout / "data").mkdir()
    (reader_checkout / "data" / "sneaky.bin").write_bytes(b"not allowed")
    added = dvc("add", "--quiet", "data", cwd=reader_checkout, user=running_registry.reader)
    assert added.returncode == 0, added.stderr
    pushed = dvc("push", cwd=reader_checkout, user=running_registry.reader)
    assert pushed.returncode != 0
    # S3's own error, which DVC can print (an HTML page printed as an empty error before).
    assert "AccessDenied" in pushed.stderr or "Access Denied" in pushed.stderr, pushed.stderr
    objects = running_registry.objects
    assert not any(p.read_bytes() == b"not allowed" for p in objects.rglob("*") if p.is_file())


def test_a_readers_write_gets_an_s3_access_denied_error(versions, running_registry):
    import boto3
    import botocore.exceptions

    reader = running_registry.reader
    s3 = boto3.client(
        "s3",
        endpoint_url=reader.remote_endpoint,
        aws_access_key_id=reader.s3_access_key,
        aws_secret_access_key=reader.s3_secret_key,
        region_name="us-east-1",
    )
    assert s3.list_objects_v2(Bucket="dvc", Prefix="files/")["KeyCount"] > 0
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3.put_object(Bucket="dvc", Key="files/md5/00/sneaky", Body=b"not allowed")
    error = refused.value.response
    assert error["Error"]["Code"] == "AccessDenied"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_failed_upload_leaves_no_tag(versions, running_registry):
    source = running_registry.source_dir("failing")
    make_files(source, 5, 1024, "failing")
    chown_tree(source)
    before = running_registry.tag_names()
    running_registry.client.stop_services([registry.S3_SERVICE])
    try:
        result = running_registry.workload("create-version", "--source", str(source))
    finally:
        running_registry.client.start_services([registry.S3_SERVICE])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot upload the data to the DVC remote")
    assert len(result.stderr.strip().splitlines()) == 1
    assert running_registry.tag_names() == before
    # With the remote back, the same source becomes the next version, with no gap.
    running_registry.daemon.wait_for_check(registry_layer.S3_READY_CHECK, timeout=30)
    retried = running_registry.workload("create-version", "--source", str(source))
    assert retried.exit_code == 0, retried.stderr
    assert retried.json["version"] == f"v{max(int(t[1:]) for t in before) + 1}"


def test_a_new_version_uploads_only_changed_files_and_its_manifest(versions, running_registry):
    source = running_registry.source_dir("incremental")
    make_files(source, 12, 1024, "incremental")
    chown_tree(source)
    first = running_registry.workload("create-version", "--source", str(source))
    assert first.exit_code == 0, first.stderr
    objects = running_registry.objects
    before = {p for p in objects.rglob("*") if p.is_file()}
    (source / "part-1/item-0004.bin").write_bytes(b"only this changed")
    chown_tree(source)
    second = running_registry.workload("create-version", "--source", str(source))
    assert second.exit_code == 0, second.stderr
    new = {p for p in objects.rglob("*") if p.is_file()} - before
    assert sorted(p.read_bytes() == b"only this changed" for p in new) == [False, True]
    assert [p.suffix for p in new if p.read_bytes() != b"only this changed"] == [".dir"]


def test_identical_source_makes_no_version(versions, running_registry):
    source = running_registry.source_dir("same-as-latest")
    latest = running_registry.workload("list-versions").json["versions"][-1]["version"]
    scratch = running_registry.source_dir("scratch")
    # Reproduce the latest version's exact tree from a fresh reader checkout.
    checkout = clone(running_registry, running_registry.reader, scratch / "co")
    files = pull(checkout, running_registry.reader, latest)
    for relative, data in files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(data)
    chown_tree(source)
    result = running_registry.workload("create-version", "--source", str(source))
    assert result.exit_code == 1
    assert f"identical to {latest}" in result.stderr
    assert latest == running_registry.workload("list-versions").json["versions"][-1]["version"]


def test_rollback_is_a_new_version_with_the_old_data(versions, running_registry, tmp_path):
    result = running_registry.workload("rollback", "--to", "v1", "--message", "bad labels")
    assert result.exit_code == 0, result.stderr
    rolled = result.json
    assert rolled["source"] == "rollback" and rolled["source_uri"] == "v1"
    checkout = clone(running_registry, running_registry.reader, tmp_path / "c")
    assert pull(checkout, running_registry.reader, rolled["version"]) == versions.v1
    # History is kept: v2 still has its own data.
    assert pull(checkout, running_registry.reader, "v2") == versions.v2


def test_rollback_to_unknown_version_fails_in_one_line(versions, running_registry):
    result = running_registry.workload("rollback", "--to", "v404")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no version v404 in the registry"


def test_create_version_from_an_s3_prefix(versions, running_registry, tmp_path):
    settings = running_registry.settings
    incoming = Path(settings.s3_root) / "incoming" / "batch-7"
    files = make_files(incoming, 4, 512, "s3-source")
    chown_tree(Path(settings.s3_root) / "incoming")
    environment = {
        **registry.workload_environment(settings),
        "MLOPS_SOURCE_ACCESS_KEY_ID": running_registry.writer.s3_access_key,
        "MLOPS_SOURCE_SECRET_ACCESS_KEY": running_registry.writer.s3_secret_key,
    }
    result = running_registry.exec_as_service(
        registry.dataset_command(
            settings,
            "create-version",
            "--source",
            "s3://incoming/batch-7",
            "--source-endpoint-url",
            settings.local_endpoint,
            "--source-kind",
            "augmentation",
        ),
        environment,
    )
    assert result.exit_code == 0, result.stderr
    assert result.json["source"] == "augmentation"
    checkout = clone(running_registry, running_registry.reader, tmp_path / "c")
    assert pull(checkout, running_registry.reader, result.json["version"]) == files


def _user_push(running: RunningRegistry, checkout: Path, tag: str, *, dvc_push: bool) -> None:
    user = running.labelling
    data = checkout / "data"
    (data / "user-added.bin").write_bytes(f"pushed with {tag}".encode())
    assert dvc("add", "--quiet", "data", cwd=checkout, user=user).returncode == 0
    if dvc_push:
        pushed = dvc("push", "--quiet", cwd=checkout, user=user)
        assert pushed.returncode == 0, pushed.stderr
    git(
        "-c",
        "user.name=labeller",
        "-c",
        "user.email=l@example.invalid",
        "commit",
        "--quiet",
        "-am",
        f"user version {tag}",
        cwd=checkout,
    )
    git("tag", tag, cwd=checkout)
    git("push", "--quiet", "origin", "HEAD:main", tag, cwd=checkout)


def _next_tag(running: RunningRegistry) -> str:
    return f"v{max(int(t[1:]) for t in running.tag_names() if t[1:].isdigit()) + 1}"


def test_user_push_of_a_tag_records_a_pebble_notice(versions, running_registry, tmp_path):
    checkout = clone(running_registry, running_registry.labelling, tmp_path / "c")
    pull(checkout, running_registry.labelling, "main")
    git("checkout", "--quiet", "main", cwd=checkout)
    tag = _next_tag(running_registry)
    _user_push(running_registry, checkout, tag, dvc_push=True)

    def noticed() -> bool:
        notices = running_registry.client.get_notices(
            types=[pebble.NoticeType.CUSTOM],
            keys=[registry.NOTICE_KEY],
            users=pebble.NoticesUsers.ALL,
        )
        return any(n.last_data.get("tags") == tag for n in notices)

    assert wait_for(noticed), "no Pebble notice for the pushed tag"
    validated = running_registry.workload("validate-version", tag)
    assert validated.exit_code == 0, validated.stderr
    assert validated.json["valid"] is True
    assert validated.json["files"] > 0


def test_user_tag_without_dvc_push_is_not_valid(versions, running_registry, tmp_path):
    checkout = clone(running_registry, running_registry.labelling, tmp_path / "c")
    pull(checkout, running_registry.labelling, "main")
    git("checkout", "--quiet", "main", cwd=checkout)
    tag = _next_tag(running_registry)
    _user_push(running_registry, checkout, tag, dvc_push=False)
    validated = running_registry.workload("validate-version", tag)
    assert validated.exit_code == 0, validated.stderr
    assert validated.json["valid"] is False
    assert validated.json["missing_count"] >= 1


def test_each_consumer_gets_its_own_credentials_and_one_endpoint(running_registry):
    reader, labelling = running_registry.reader, running_registry.labelling
    settings = running_registry.settings
    assert (reader.access, labelling.access) == ("read", "write")
    assert reader.registry_url == labelling.registry_url == settings.git_url
    assert reader.remote_endpoint == labelling.remote_endpoint == settings.remote_endpoint
    assert reader.remote_url == labelling.remote_url == "s3://dvc"
    assert reader.username != labelling.username and reader.password != labelling.password
    assert reader.s3_access_key != labelling.s3_access_key
    for consumer in (reader, labelling):
        assert consumer.s3_secret_key != consumer.password


def test_health_url_and_checks_are_up(running_registry):
    port = running_registry.settings.git_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        assert response.status == 200
    checks = {c.name: c.status for c in running_registry.client.get_checks()}
    assert set(checks) == {
        registry_layer.GIT_READY_CHECK,
        registry_layer.S3_READY_CHECK,
        registry_layer.S3_READ_ONLY_READY_CHECK,
    }
    assert all(status == pebble.CheckStatus.UP for status in checks.values())


def test_bootstrap_again_changes_nothing(running_registry):
    heads = git("ls-remote", "--heads", running_registry.url_for(running_registry.writer))
    again = running_registry.exec_as_service(
        registry.bootstrap_command(running_registry.settings),
        registry.bootstrap_environment(running_registry.settings),
    )
    assert again.exit_code == 0, again.stderr
    assert heads.startswith(again.stdout.strip().splitlines()[-1])
    assert git("ls-remote", "--heads", running_registry.url_for(running_registry.writer)) == heads


def test_list_versions_output_is_json_for_machines(versions, running_registry):
    listed = running_registry.workload("list-versions")
    names = [v["version"] for v in json.loads(listed.stdout)["versions"]]
    assert names[:2] == ["v1", "v2"]
    assert names == sorted(names, key=lambda n: int(n[1:]))
