"""A small CNN in PyTorch as a scikit-learn classifier: on CUDA when present, else the CPU.

It takes the image spec's features (rows of size x size pixels, grey or RGB, 0..1), so it fits
in the same pipelines, cross-validation and error analysis as the scikit-learn specs, and
records its training loss per epoch (``loss_curve_``, logged as ``train_loss``). The fitted
network is kept on the CPU, so the model pickles and loads on machines without a GPU.
Needs the ``torch`` extra: ``pip install 'mlops-workload[torch]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch  # pyright: ignore[reportMissingImports]  (the opt-in torch extra)
from sklearn.base import BaseEstimator, ClassifierMixin

PREDICT_BATCH = 1024


def pick_device(requested: str) -> str:
    """``auto``: CUDA when PyTorch sees a GPU, else the CPU; an explicit CUDA must exist."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested} was asked for, but PyTorch sees no CUDA device")
    return requested


class TorchImageClassifier(ClassifierMixin, BaseEstimator):
    """Two convolutions, pooling and two dense layers, trained with Adam on cross-entropy."""

    def __init__(
        self,
        size: int = 16,
        channels: int = 1,
        epochs: int = 30,
        learning_rate: float = 1e-3,
        batch_size: int = 64,
        hidden: int = 128,
        weight_decay: float = 0.0,
        device: str = "auto",
        random_state: int = 0,
    ):
        self.size = size
        self.channels = channels
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.hidden = hidden
        self.weight_decay = weight_decay
        self.device = device
        self.random_state = random_state

    def _network(self, classes: int) -> torch.nn.Module:
        nn = torch.nn
        return nn.Sequential(
            nn.Conv2d(self.channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, classes),
        )

    def _images(self, features: Any) -> torch.Tensor:
        """Rows of pixels (height, width, channel order) as a batch of CHW images."""
        array = np.asarray(features, dtype=np.float32)
        expected = self.size * self.size * self.channels
        if array.ndim != 2 or array.shape[1] != expected:
            raise ValueError(f"expected rows of {expected} pixel values, got {array.shape}")
        array = array.reshape(-1, self.size, self.size, self.channels).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(array))

    def fit(self, features: Any, labels: Any) -> TorchImageClassifier:
        if self.epochs < 1 or self.batch_size < 1 or self.hidden < 1:
            raise ValueError("epochs, batch_size and hidden must be positive")
        self.classes_, encoded = np.unique(np.asarray(labels), return_inverse=True)
        device = pick_device(self.device)
        torch.manual_seed(self.random_state)
        order_generator = torch.Generator().manual_seed(self.random_state)
        network = self._network(len(self.classes_)).to(device)
        images = self._images(features)
        targets = torch.from_numpy(encoded.astype(np.int64))
        optimizer = torch.optim.Adam(
            network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        loss_function = torch.nn.CrossEntropyLoss()
        self.loss_curve_: list[float] = []
        network.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(images), generator=order_generator)
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_function(network(images[batch].to(device)), targets[batch].to(device))
                loss.backward()
                optimizer.step()
                total += float(loss.item()) * len(batch)
            self.loss_curve_.append(total / len(order))
        self.network_ = network.to("cpu").eval()
        self.device_ = device
        self.n_features_in_ = self.size * self.size * self.channels
        return self

    def predict_proba(self, features: Any) -> np.ndarray:
        device = pick_device(self.device)
        images = self._images(features)
        network = self.network_.to(device)
        parts = []
        try:
            with torch.no_grad():
                for start in range(0, len(images), PREDICT_BATCH):
                    logits = network(images[start : start + PREDICT_BATCH].to(device))
                    parts.append(torch.softmax(logits, dim=1).cpu().numpy())
        finally:
            self.network_ = network.to("cpu")
        if not parts:
            return np.empty((0, len(self.classes_)), dtype=np.float32)
        return np.concatenate(parts)

    def predict(self, features: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(features).argmax(axis=1)]
