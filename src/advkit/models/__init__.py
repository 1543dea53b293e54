"""Reference models by name, the training loop, and safe model-file I/O.

``build("cnn-small", input_shape=(1, 8, 8), n_classes=10)``, ``train(model, x, y)``,
``save_model(model, "out/")`` / ``load_model("out/")`` (safetensors + JSON; pickle-based files are
scanned and refused unless trusted explicitly) and ``scan_model_file(path)``.
"""

from advkit.models.io import LoadedModel, load_model, save_model, target_for
from advkit.models.scan import ScanResult, scan_model_file
from advkit.models.train import TrainHistory, evaluate_accuracy, train
from advkit.models.zoo import ZOO_NAMES, build

__all__ = [
    "ZOO_NAMES",
    "LoadedModel",
    "ScanResult",
    "TrainHistory",
    "build",
    "evaluate_accuracy",
    "load_model",
    "save_model",
    "scan_model_file",
    "target_for",
    "train",
]
