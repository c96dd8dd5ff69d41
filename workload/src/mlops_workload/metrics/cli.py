"""``mlops-workload metrics registry|labelling ...``: run a service's exporter until killed."""

from __future__ import annotations

import argparse
import os
from typing import Any, NoReturn

from mlops_workload.metrics import common, labelling, registry


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port")
    return number


def _rclone_socket(value: str) -> tuple[str, str]:
    server, _, path = value.partition("=")
    if not server or not path:
        raise argparse.ArgumentTypeError("must be SERVER=SOCKET_PATH")
    return server, path


def register(groups: Any) -> None:
    """Add the ``metrics`` command group to the main parser's subparsers."""
    group = groups.add_parser("metrics", help="serve a service's Prometheus metrics")
    commands = group.add_subparsers(dest="command", required=True)

    reg = commands.add_parser("registry", help="the data registry's exporter")
    reg.add_argument("--port", type=_port, required=True)
    reg.add_argument("--state-dir", required=True, help="the registry's storage")
    reg.add_argument("--repository", required=True, help="the bare git repository")
    reg.add_argument("--objects-dir", required=True, help="the DVC objects on the storage")
    reg.add_argument("--health-url", required=True)
    reg.add_argument("--status-url", required=True, help="Apache's /server-status?auto")
    reg.add_argument(
        "--rclone-socket", type=_rclone_socket, action="append", default=[], dest="sockets"
    )
    reg.add_argument("--pinned-version-file", default=None, help="holds the pinned vN, if any")
    reg.add_argument("--ca-file", default=None, help="verifies Apache's HTTPS (a private CA)")

    lab = commands.add_parser("labelling", help="Label Studio's exporter")
    lab.add_argument("--port", type=_port, required=True)
    lab.add_argument("--data-dir", required=True, help="Label Studio's storage")
    lab.add_argument("--jobs-dir", required=True)
    lab.add_argument("--label-studio-url", required=True)
    lab.add_argument("--ca-file", default=None, help="verifies Label Studio's HTTPS")
    lab.add_argument("--agreement-file", required=True)
    lab.add_argument(
        "--gate-threshold-file", default=None, help="holds the export gate's threshold, if any"
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> NoReturn:
    """Serve the chosen exporter; never returns."""
    if args.command == "registry":
        collectors = registry.collectors(
            registry.RegistrySources(
                state_dir=args.state_dir,
                repository=args.repository,
                objects_dir=args.objects_dir,
                health_url=args.health_url,
                status_url=args.status_url,
                rclone_sockets=dict(args.sockets),
                pinned_version_file=args.pinned_version_file,
                ca_file=args.ca_file,
            )
        )
    else:
        token = os.environ.get("LABEL_STUDIO_USER_TOKEN")
        if not token:
            parser.error("LABEL_STUDIO_USER_TOKEN (Label Studio's admin token) is not set")
        collectors = labelling.collectors(
            labelling.LabellingSources(
                data_dir=args.data_dir,
                jobs_dir=args.jobs_dir,
                url=args.label_studio_url.rstrip("/"),
                token=token,
                agreement_file=args.agreement_file,
                gate_threshold_file=args.gate_threshold_file,
                ca_file=args.ca_file,
            )
        )
    common.serve(args.port, collectors)
    raise SystemExit(0)
