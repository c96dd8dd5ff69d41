"""``mlops-workload labelling ...``: the labelling commands, registered into the main CLI.

Credentials come from the environment only (the charm passes them to the Pebble exec):
``LABEL_STUDIO_API_KEY`` for Label Studio, ``MLOPS_REGISTRY_USERNAME``/``_PASSWORD`` for the
registry's git server, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for its DVC remote.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mlops_workload.labelling import operations, presets
from mlops_workload.labelling.client import LabellingError, LabelStudio
from mlops_workload.labelling.registry_io import authenticate_git
from mlops_workload.workspace import RegistryError, Workspace


def _threshold(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number


def _alpha(value: str) -> float:
    number = float(value)
    if not -1.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError("must be between -1 and 1 (Krippendorff's alpha)")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    env = os.environ.get
    common.add_argument("--label-studio-url", default=env("LABEL_STUDIO_URL"))
    common.add_argument("--workspace", default=env("MLOPS_REGISTRY_WORKSPACE"))
    common.add_argument("--registry", default=env("MLOPS_REGISTRY_URL"))
    common.add_argument("--endpoint-url", default=env("MLOPS_DVC_ENDPOINT_URL"))
    common.add_argument("--media-root", default=env("MLOPS_LABELLING_MEDIA_ROOT"))
    common.add_argument("--project", required=True, help="the Label Studio project's title")
    return common


def register(groups: Any) -> None:
    """Add the ``labelling`` command group to the main parser's subparsers."""
    group = groups.add_parser("labelling", help="Label Studio projects fed by dataset versions")
    commands = group.add_subparsers(dest="command", required=True)
    common = _common()

    imp = commands.add_parser("import-version", parents=[common], help="version items → tasks")
    imp.add_argument("--version", required=True, dest="dataset_version")
    config = imp.add_mutually_exclusive_group(required=True)
    config.add_argument("--preset", choices=sorted(presets.PRESETS))
    config.add_argument("--label-config", help="a Label Studio label config (XML)")
    imp.add_argument("--labels", default="", help="comma-separated labels for a preset")
    imp.add_argument("--overlap", type=_positive, default=1, help="annotators per task")

    exp = commands.add_parser("export-annotations", parents=[common], help="labels → version")
    exp.add_argument("--message", default="")
    exp.add_argument(
        "--agreement-threshold",
        type=_alpha,
        help="refuse the export while Krippendorff's alpha is below it (the agreement gate)",
    )
    exp.add_argument(
        "--force", action="store_true", help="export below the gate, recorded as forced"
    )

    rep = commands.add_parser("consistency-report", parents=[common], help="agreement")
    rep.add_argument("--threshold", type=_threshold, default=0.5)
    rep.add_argument("--requeue", action="store_true", help="copy flagged tasks to re-label")
    rep.add_argument("--overlap", type=_positive, help="annotators per re-label task")

    rel = commands.add_parser("relabel", parents=[common], help="queue items for re-labelling")
    rel.add_argument("--items", required=True, help="a JSON list of item ids")
    rel.add_argument("--reason", default="")
    rel.add_argument("--batch", required=True, help="an id for the batch (de-duplicates)")
    rel.add_argument("--overlap", type=_positive, help="annotators per re-label task")


def _label_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    if args.label_config:
        try:
            presets.data_key(args.label_config)
        except ValueError as error:
            parser.error(str(error))
        return args.label_config
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if not labels:
        parser.error("--labels is required with --preset")
    return presets.render(args.preset, labels)


def _workspace(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Workspace:
    if not args.workspace or not args.registry:
        parser.error("--workspace and --registry (or their environment variables) are required")
    authenticate_git(
        os.environ.get("MLOPS_REGISTRY_USERNAME"), os.environ.get("MLOPS_REGISTRY_PASSWORD")
    )
    return Workspace(Path(args.workspace), args.registry, args.endpoint_url)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """Run a parsed ``labelling`` command and return its JSON-able result."""
    token = os.environ.get("LABEL_STUDIO_API_KEY")
    if not args.label_studio_url or not token:
        parser.error("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set")
    # Over HTTPS, Label Studio is verified with its own CA (the charm's file).
    ls = LabelStudio(args.label_studio_url, token, ca_file=os.environ.get("LABEL_STUDIO_CA_FILE"))
    try:
        if args.command == "import-version":
            if not args.media_root:
                parser.error("--media-root (or MLOPS_LABELLING_MEDIA_ROOT) is required")
            return operations.import_version(
                ls,
                _workspace(args, parser),
                Path(args.media_root),
                project_title=args.project,
                version=args.dataset_version,
                label_config=_label_config(args, parser),
                overlap=args.overlap,
            )
        if args.command == "export-annotations":
            return operations.export_annotations(
                ls,
                _workspace(args, parser),
                project_title=args.project,
                message=args.message,
                agreement_threshold=args.agreement_threshold,
                force=args.force,
            )
        if args.command == "consistency-report":
            return operations.consistency_report(
                ls,
                project_title=args.project,
                threshold=args.threshold,
                requeue=args.requeue,
                overlap=args.overlap,
            )
        try:
            item_ids = json.loads(args.items)
        except json.JSONDecodeError:
            parser.error("--items must be a JSON list of item ids")
        if not isinstance(item_ids, list) or not all(isinstance(i, str) for i in item_ids):
            parser.error("--items must be a JSON list of item ids")
        return operations.relabel(
            ls,
            project_title=args.project,
            item_ids=item_ids,
            reason=args.reason,
            batch=args.batch,
            overlap=args.overlap,
        )
    except LabellingError as error:
        # The main CLI reports RegistryError as its one-line failure.
        raise RegistryError(str(error)) from None
