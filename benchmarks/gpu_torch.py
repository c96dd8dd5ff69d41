"""Benchmark: the PyTorch spec (image-torch-cnn) trained on CUDA and on the CPU (prints only).

Trains the spec's CNN, as ``mlops-workload training train --spec image-torch-cnn`` builds it,
on scikit-learn's digits (shipped with it) upscaled to ``--size`` pixels a side and repeated
``--repeat`` times, once on each device, and prints training and prediction throughput in
samples per second. Without a CUDA device PyTorch can see, the CUDA run is skipped with a
message. Needs the ``torch`` extra (PyPI's torch is the multi-GB CUDA build):

    tox exec -e workload-training-torch -- python benchmarks/gpu_torch.py [--epochs 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workload" / "src"))

import numpy as np
from sklearn.datasets import load_digits

from mlops_workload.training.specs import get_spec

SPEC = "image-torch-cnn"


def features(size: int, repeat: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits as the image spec's features: rows of size x size grey pixels, 0..1."""
    images, labels = load_digits(return_X_y=True)
    scale = -(-size // 8)  # nearest-neighbour upscaling, then cropped to size
    grids = np.kron(images.reshape(-1, 8, 8) / 16.0, np.ones((scale, scale)))[:, :size, :size]
    rows = grids.reshape(len(images), -1).astype(np.float32)
    return np.tile(rows, (repeat, 1)), np.tile(labels.astype(str), repeat)


def benchmark(device: str, rows: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> None:
    spec = get_spec(SPEC)
    params = spec.resolve(
        {"size": args.size, "epochs": args.epochs, "batch_size": args.batch_size, "device": device}
    )
    # One short fit first: CUDA's context and kernels load on first use, not in the figure.
    spec.estimator({**params, "epochs": 1}).fit(
        rows[: args.batch_size * 2], labels[: args.batch_size * 2]
    )
    started = time.monotonic()
    model = spec.estimator(params).fit(rows, labels)
    trained = time.monotonic() - started
    started = time.monotonic()
    accuracy = float((model.predict(rows) == labels).mean())
    predicted = time.monotonic() - started
    print(
        f"{device:<5} train {len(rows) * args.epochs / trained:>10,.0f} samples/s "
        f"({args.epochs} epochs of {len(rows)} in {trained:.1f} s), "
        f"predict {len(rows) / predicted:>10,.0f} samples/s, "
        f"final loss {model.loss_curve_[-1]:.3f}, training accuracy {accuracy:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="pixels a side")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the 1,797 digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    try:
        import torch  # pyright: ignore[reportMissingImports]
    except ImportError:
        sys.exit("PyTorch is not installed: it is the opt-in extra mlops-workload[torch]")
    rows, labels = features(args.size, args.repeat)
    print(f"{SPEC}: {len(rows)} images of {args.size}x{args.size}, torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name(0)}")
        benchmark("cuda", rows, labels, args)
    else:
        print("cuda: skipped, PyTorch sees no CUDA device")
    benchmark("cpu", rows, labels, args)


if __name__ == "__main__":
    main()
