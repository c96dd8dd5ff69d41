"""The PyTorch spec: a small CNN on CUDA when PyTorch sees a GPU, on the CPU otherwise.

Opt-in (``tox -e workload-training-torch``): PyPI's Linux torch wheel is the CUDA build and
pulls several GB of NVIDIA wheels, so the default run leaves it out and these tests skip.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is the opt-in torch extra: run tox -e workload-training-torch"
)

from mlops_workload.training import specs  # noqa: E402
from tests.workload.training.harness import TrainingStack, result  # noqa: E402

pytestmark = pytest.mark.slow


def digit_features():
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    # The spec's features at size 8: the digits' own pixels, 0..1.
    return (images / 16.0).astype("float32"), labels.astype(str)


def test_the_cnn_learns_digits_on_the_device_pytorch_sees():
    spec = specs.get_spec("image-torch-cnn")
    params = spec.resolve({"size": 8, "epochs": 15})
    features, labels = digit_features()
    model = spec.estimator(params).fit(features[:1400], labels[:1400])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.device_ == expected
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    accuracy = (model.predict(features[1400:]) == labels[1400:]).mean()
    assert accuracy > 0.9
    probabilities = model.predict_proba(features[1400:1410])
    assert probabilities.shape == (10, 10)
    assert abs(float(probabilities.sum(axis=1).mean()) - 1.0) < 1e-5


def test_asking_for_cuda_without_a_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    spec = specs.get_spec("image-torch-cnn")
    model = spec.estimator(spec.resolve({"device": "cuda", "epochs": 1, "size": 8}))
    features, labels = digit_features()
    with pytest.raises(ValueError, match="PyTorch sees no CUDA device"):
        model.fit(features[:100], labels[:100])


def test_the_torch_spec_trains_as_a_job_and_logs_loss_per_epoch(
    stack: TrainingStack, monkeypatch: pytest.MonkeyPatch
):
    from mlflow.sklearn import load_model

    trained = result(
        stack.training(
            "train",
            *("--version", "v1", "--spec", "image-torch-cnn"),
            *("--params", '{"epochs": 5}', "--folds", "2"),
        )
    )
    client = stack.admin_client(monkeypatch)
    history = client.get_metric_history(trained["run_id"], "train_loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
    loaded = load_model(trained["model"]["uri"])
    assert loaded is not None and list(loaded.classes_) == [str(d) for d in range(10)]
