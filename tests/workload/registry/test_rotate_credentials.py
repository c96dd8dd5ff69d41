"""rotate-credentials on data-versioning-k8s against the real registry, run by a real Pebble.

The registry as deployed with two consumers (``training`` reads, ``labelling`` writes): the
action rotates the writer and the consumers. What must hold: git over HTTP (Apache, htpasswd)
refuses the old passwords (401) and serves the new ones; the S3 remote (rclone) refuses the
old keys (boto3: InvalidAccessKeyId) and serves the new ones; a consumer knowing only its
secret's new revision (what it reads on ``secret-changed``) clones and lists objects at once;
the servers restarted once, in the action, and the next hook changes nothing.
"""

from __future__ import annotations

import pytest
from ops import testing

from tests.workload.registry.harness import RunningRegistry, User, charm, git, registry

pytestmark = pytest.mark.slow


def s3_client(running: RunningRegistry, user: User):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=running.settings.remote_endpoint,
        aws_access_key_id=user.s3_access_key,
        aws_secret_access_key=user.s3_secret_key,
        region_name="us-east-1",
    )


def git_refused(url: str) -> str:
    out = git("ls-remote", url, check=False)
    assert "401" in out or "Authentication failed" in out, out
    return out


def s3_refused(running: RunningRegistry, user: User) -> str:
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3_client(running, user).list_objects_v2(Bucket=registry.DVC_BUCKET)
    code = refused.value.response["Error"]["Code"]
    assert code in ("InvalidAccessKeyId", "AccessDenied", "SignatureDoesNotMatch"), code
    return code


def test_rotation_refuses_the_old_credentials_and_serves_the_new(
    running_registry: RunningRegistry,
):
    running = running_registry
    old_writer, old_reader, old_labelling = running.writer, running.reader, running.labelling
    for user in (old_writer, old_reader, old_labelling):
        assert "refs/heads/main" in git("ls-remote", running.url_for(user))
        s3_client(running, user).list_objects_v2(Bucket=registry.DVC_BUCKET)
    container = running.unit.containers[charm.CONTAINER]
    before = container.last_change_id()

    results, state = running.unit.run_action("rotate-credentials", running.state)

    assert not isinstance(results, testing.ActionFailed), results.message
    running.refresh(state)  # the writer and both consumers from the secrets' new revisions
    assert results["rotated"] == "3" and set(results["consumers"]) == {"training", "labelling"}
    assert registry.S3_SERVICE in results["restarted"]
    assert container.changes_since(before), "the S3 servers were not restarted"
    container.wait_for_checks(timeout=30)
    for old, new in (
        (old_writer, running.writer),
        (old_reader, running.reader),
        (old_labelling, running.labelling),
    ):
        assert (new.password, new.s3_secret_key) != (old.password, old.s3_secret_key)
        git_refused(running.url_for(old))
        s3_refused(running, old)
        assert "refs/heads/main" in git("ls-remote", running.url_for(new))
        s3_client(running, new).list_objects_v2(Bucket=registry.DVC_BUCKET)
    # Write access follows the new keys too: the labelling consumer may still push objects.
    s3_client(running, running.labelling).put_object(
        Bucket=registry.DVC_BUCKET, Key="files/md5/00/rotated", Body=b"after rotation"
    )

    # The next hook finds the files as the action left them: no restart, no replan.
    marker = container.last_change_id()
    running.run_charm(running.context.on.update_status())
    assert not container.changes_since(marker)


def test_unknown_consumer_fails_and_changes_nothing(running_registry: RunningRegistry):
    running = running_registry
    reader = running.reader
    container = running.unit.containers[charm.CONTAINER]
    before = container.last_change_id()

    failure, state = running.unit.run_action(
        "rotate-credentials", running.state, consumer="nobody"
    )

    assert isinstance(failure, testing.ActionFailed)
    assert failure.message == "no consumer 'nobody': known consumers: labelling, training"
    running.refresh(state)
    assert running.reader == reader
    assert not container.changes_since(before)
    assert "refs/heads/main" in git("ls-remote", running.url_for(reader))
