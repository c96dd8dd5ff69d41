"""``mlops-workload training ...``: the training commands, registered into the main CLI.

Configured by the environment and the arguments only (a Kubernetes Job or a systemd unit):

- the registry: ``MLOPS_REGISTRY_URL`` (git), ``MLOPS_REGISTRY_USERNAME``/``_PASSWORD`` (sent as
  git's HTTP auth through git's environment, never written to a file), ``AWS_ACCESS_KEY_ID``/
  ``AWS_SECRET_ACCESS_KEY`` (the consumer's keys for ``dvc pull``; the DVC remote and its
  endpoint are the registry's committed config, ``MLOPS_DVC_ENDPOINT_URL`` overrides the
  endpoint), ``MLOPS_TRAINING_WORKDIR`` (the work folder kept between runs);
- tracking: ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``,
  ``MLFLOW_EXPERIMENT_NAME``; ``MLOPS_APPROACH`` is the default ``--approach`` and
  ``MLOPS_APPROACH_REVISION`` of ``--approach-revision`` (the training charm sets both when the
  approach switch is related: every run is tagged with them);
- HTTPS: ``GIT_SSL_CAINFO``, ``AWS_CA_BUNDLE`` and ``MLFLOW_TRACKING_SERVER_CERT_PATH`` name the
  CA files the charm wrote when the registry or tracking serves HTTPS
  (``mlops_charms.client_ca``): git, botocore and MLflow read them themselves.

The result is one JSON object on stdout (what MLflow prints goes to stderr); a failure is one
line, ``error: why``, on stderr, and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from mlops_workload import dataset
from mlops_workload.labelling.registry_io import authenticate_git
from mlops_workload.training import tracking
from mlops_workload.training.data import NoLabelsError, RegistryAccess, TrainingError
from mlops_workload.workspace import RegistryError


class _OneLineParser(argparse.ArgumentParser):
    """A job's bad arguments fail as its bad input does: one line on stderr, exit status 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {message}\n")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    env = os.environ.get
    common.add_argument(
        "--workdir",
        default=env("MLOPS_TRAINING_WORKDIR"),
        help="the work folder: registry clone and fetched versions (env MLOPS_TRAINING_WORKDIR)",
    )
    common.add_argument("--registry", default=env("MLOPS_REGISTRY_URL"), help="git URL")
    common.add_argument("--endpoint-url", default=env("MLOPS_DVC_ENDPOINT_URL"))
    common.add_argument("--version", required=True, dest="dataset_version", help="vN")
    common.add_argument("--project", default=None, help="the labels of this labelling project")
    common.add_argument("--approach", default=env("MLOPS_APPROACH"), help="run tag")
    common.add_argument(
        "--approach-revision",
        default=env("MLOPS_APPROACH_REVISION"),
        help="run tag: the approach policy's revision (env MLOPS_APPROACH_REVISION)",
    )
    return common


def _model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="a model spec (list-specs)")
    parser.add_argument("--params", default="{}", help="the spec's params, a JSON object")
    parser.add_argument("--folds", type=int, default=5, help="k of the k-fold CV")
    parser.add_argument("--seed", type=int, default=0, help="folds and split")
    parser.add_argument("--table", default=None, help="tabular specs: the CSV under data/")
    parser.add_argument("--label-column", default="label", help="tabular specs")


def register(groups: Any) -> None:
    """Add the ``training`` command group to the main parser's subparsers."""
    group = groups.add_parser("training", help="train, error analysis, augmentation, sweeps")
    commands = group.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    common = _common()

    train = commands.add_parser("train", parents=[common], help="train a spec on a version")
    _model(train)
    train.add_argument("--test-size", type=float, default=0.2, help="held-out share")
    train.add_argument("--no-register", action="store_true", help="log the model only")
    train.add_argument(
        "--skip-unlabelled",
        action="store_true",
        help="a version without any labels is skipped (result: skipped), not a failure",
    )

    errors = commands.add_parser(
        "error-analysis", parents=[common], help="rank suspected label errors"
    )
    _model(errors)
    errors.add_argument("--top-k", type=int, default=50, help="items in the relabel batch")

    augment = commands.add_parser(
        "augment", parents=[common], help="a seeded augmentation as a new version"
    )
    augment.add_argument("--transforms", required=True, help="a JSON object (see augment.py)")
    augment.add_argument("--seed", type=int, required=True)
    augment.add_argument("--message", default="")
    augment.add_argument(
        "--allow-unchanged",
        action="store_true",
        help="succeed without a new version when every item has its copies already",
    )

    sweep = commands.add_parser("sweep", parents=[common], help="a grid of params, the best")
    _model(sweep)
    sweep.add_argument(
        "--grid",
        required=True,
        help='a JSON object {"C": [1, 10]}, or a list of them: [{"C": [1]}, {"C": [10]}]',
    )
    sweep.add_argument("--metric", default="accuracy", help="chooses the best by its CV mean")
    sweep.add_argument("--promote", default=None, help="alias to set on the best model version")
    sweep.add_argument("--test-size", type=float, default=0.2, help="held-out share")

    commands.add_parser("list-specs", help="the model specs and their params")


def _json_arg(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise TrainingError(f"{option} is not valid JSON: {error.msg} at {error.pos}") from None


def _params(text: str) -> dict[str, Any]:
    params = _json_arg(text, "--params")
    if not isinstance(params, dict):
        raise TrainingError("--params must be a JSON object of the spec's params")
    return params


def _access(args: argparse.Namespace) -> RegistryAccess:
    if dataset.version_number(args.dataset_version) is None:
        raise TrainingError(f"not a version name (v1, v2, …): {args.dataset_version!r}")
    if not args.registry:
        raise TrainingError("MLOPS_REGISTRY_URL (or --registry) is not set")
    if not args.workdir:
        raise TrainingError("MLOPS_TRAINING_WORKDIR (or --workdir) is not set")
    authenticate_git(
        os.environ.get("MLOPS_REGISTRY_USERNAME"), os.environ.get("MLOPS_REGISTRY_PASSWORD")
    )
    return RegistryAccess(args.registry, Path(args.workdir), args.endpoint_url)


def _dispatch(args: argparse.Namespace) -> Any:
    from mlops_workload.training import augment, operations, specs

    if args.command == "list-specs":
        return {"specs": specs.describe()}
    if args.command == "augment":
        transforms = augment.parse_transforms(_json_arg(args.transforms, "--transforms"))
        return augment.augment(
            _access(args),
            args.dataset_version,
            transforms,
            args.seed,
            message=args.message,
            project=args.project,
            approach=args.approach,
            allow_unchanged=args.allow_unchanged,
        )
    params = _params(args.params)
    access = _access(args)
    data_options = operations.DataOptions(args.project, args.table, args.label_column)
    options = operations.RunOptions(
        folds=args.folds,
        test_size=getattr(args, "test_size", 0.2),
        seed=args.seed,
        approach=args.approach or "model-centric",
        approach_revision=args.approach_revision or None,
    )
    if args.command == "train":
        try:
            return operations.train(
                access,
                args.dataset_version,
                args.spec,
                params,
                options=options,
                data_options=data_options,
                register=not args.no_register,
            )
        except NoLabelsError as error:
            if not args.skip_unlabelled:
                raise
            # A raw version (before labelling): the loop waits for the labelled one.
            return {"skipped": str(error), "version": args.dataset_version}
    if args.command == "error-analysis":
        return operations.error_analysis(
            access,
            args.dataset_version,
            args.spec,
            params,
            top_k=args.top_k,
            options=options,
            data_options=data_options,
        )
    return operations.sweep(
        access,
        args.dataset_version,
        args.spec,
        _json_arg(args.grid, "--grid"),
        base_params=params,
        metric=args.metric,
        promote=args.promote,
        options=options,
        data_options=data_options,
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """Run a parsed ``training`` command and return its JSON-able result."""
    del parser  # every bad value is a one-line failure, not a usage error
    tracking.quiet_environment()
    if importlib.util.find_spec("mlflow") is None:
        raise RegistryError(
            "the training commands need the training extra: install mlops-workload[training]"
        )
    try:
        # MLflow prints run links on stdout, which carries only the result.
        with contextlib.redirect_stdout(sys.stderr):
            return _dispatch(args)
    except TrainingError as error:
        # The main CLI reports RegistryError as its one-line failure.
        raise RegistryError(str(error)) from None
    except Exception as error:
        # Imported by now if MLflow raised it; bad input fails before MLflow (seconds) loads.
        mlflow_errors = sys.modules.get("mlflow.exceptions")
        if mlflow_errors and isinstance(error, mlflow_errors.MlflowException):
            raise RegistryError(f"tracking: {tracking.one_line(error)}") from None
        raise
