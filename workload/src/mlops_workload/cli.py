"""``mlops-workload``: the stack's workload commands.

Results go to stdout as one JSON document; a failure prints one line
(``error: why``) on stderr and exits 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mlops_workload import backup, dataset, inline_files
from mlops_workload.labelling import cli as labelling_cli  # labelling's command group
from mlops_workload.metrics import cli as metrics_cli  # the services' exporters
from mlops_workload.training import cli as training_cli  # training's command group
from mlops_workload.workspace import RegistryError, Workspace


def _registry_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace",
        default=os.environ.get("MLOPS_REGISTRY_WORKSPACE"),
        help="the persistent working clone (env MLOPS_REGISTRY_WORKSPACE)",
    )
    common.add_argument(
        "--registry",
        default=os.environ.get("MLOPS_REGISTRY_URL"),
        help="git URL or path of the registry (env MLOPS_REGISTRY_URL)",
    )
    common.add_argument(
        "--endpoint-url",
        default=os.environ.get("MLOPS_DVC_ENDPOINT_URL"),
        help="S3 endpoint of the DVC remote, overriding the committed one "
        "(env MLOPS_DVC_ENDPOINT_URL)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="mlops-workload", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True)
    ds = groups.add_parser("dataset", help="dataset versions in the data registry")
    commands = ds.add_subparsers(dest="command", required=True)
    common = _registry_options()

    create = commands.add_parser("create-version", parents=[common], help="cut the next version")
    create.add_argument("--source", required=True, help="a directory or an s3://bucket/prefix")
    create.add_argument(
        "--source-kind",
        default="upload",
        choices=[k for k in dataset.SOURCE_KINDS if k != "rollback"],
    )
    create.add_argument(
        "--source-endpoint-url", default=os.environ.get("MLOPS_SOURCE_ENDPOINT_URL")
    )
    create.add_argument("--message", default="")
    create.add_argument("--approach", default=None)

    commands.add_parser("list-versions", parents=[common], help="every version, oldest first")

    diff = commands.add_parser("diff-versions", parents=[common], help="paths and bytes changed")
    diff.add_argument("old")
    diff.add_argument("new")

    back = commands.add_parser(
        "rollback", parents=[common], help="a new version equal to an old one"
    )
    back.add_argument("--to", required=True, dest="target")
    back.add_argument("--message", default="")
    back.add_argument("--approach", default=None)

    validate = commands.add_parser(
        "validate-version", parents=[common], help="is the version's data all in the remote"
    )
    validate.add_argument("version")
    labelling_cli.register(groups)  # `mlops-workload labelling ...`: labelling/cli.py
    backup.register(groups)  # `mlops-workload backup ...`: backup.py
    training_cli.register(groups)  # `mlops-workload training ...`: training/cli.py
    metrics_cli.register(groups)  # `mlops-workload metrics ...`: metrics/cli.py
    return parser


def _version_arg(value: str, parser: argparse.ArgumentParser) -> str:
    if dataset.version_number(value) is None:
        parser.error(f"not a version name (v1, v2, …): {value!r}")
    return value


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """Run the parsed command and return its JSON-able result."""
    if args.group == "labelling":  # labelling's commands: labelling/cli.py
        return labelling_cli.run(args, parser)
    if args.group == "training":  # training's commands: training/cli.py
        return training_cli.run(args, parser)
    if args.group == "backup":  # backup's commands: backup.py
        return backup.run(args)
    if not args.workspace or not args.registry:
        parser.error("--workspace and --registry (or their environment variables) are required")
    ws = Workspace(Path(args.workspace), args.registry, args.endpoint_url)
    if args.command == "create-version":
        return dataset.create_version(
            ws,
            args.source,
            source_kind=args.source_kind,
            message=args.message,
            approach=args.approach,
            source_endpoint_url=args.source_endpoint_url,
        )
    if args.command == "list-versions":
        if Path(args.registry).is_dir():
            # The registry's own bare repository: its tags are read where they are, without
            # the workspace's lock, so listing works while a version is being cut.
            return {"versions": dataset.list_versions(Workspace(Path(args.registry), "."))}
        with ws.locked():
            ws.sync()
            return {"versions": dataset.list_versions(ws)}
    if args.command == "diff-versions":
        old, new = _version_arg(args.old, parser), _version_arg(args.new, parser)
        return dataset.diff_versions(ws, old, new)
    if args.command == "rollback":
        target = _version_arg(args.target, parser)
        return dataset.rollback(ws, target, message=args.message, approach=args.approach)
    return dataset.validate_version(ws, _version_arg(args.version, parser))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlops-workload``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.group == "metrics":  # an exporter: serves until killed, prints no result
        metrics_cli.run(args, parser)
    try:
        inline_files.write(os.environ)  # a TrainJob's CA files, before any client reads them
        result = run(args, parser)
    except (RegistryError, inline_files.InlineFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
