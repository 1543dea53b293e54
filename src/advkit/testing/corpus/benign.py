"""The corpus's ordinary files: fitted scikit-learn estimators, advkit zoo models and small
TorchScript modules, in every format."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import torch
from torch import nn

from advkit.testing.corpus._writer import _Writer
from advkit.testing.corpus.torchscript import _jit_save

# --- benign models ------------------------------------------------------------------------------


def _estimators():
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        AdaBoostClassifier,
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    lr = LogisticRegression
    return {
        "logreg": lr(), "forest": RandomForestClassifier(n_estimators=3, random_state=0),
        "gboost": GradientBoostingClassifier(n_estimators=3),
        "extra": ExtraTreesClassifier(n_estimators=3, random_state=0),
        "histgb": HistGradientBoostingClassifier(max_iter=3), "svc": SVC(),
        "knn": KNeighborsClassifier(n_neighbors=3),
        "kdtree": KNeighborsClassifier(n_neighbors=3, algorithm="kd_tree"),
        "mlp": MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=0),
        "tree": DecisionTreeClassifier(random_state=0),
        "pipeline": Pipeline([("s", StandardScaler()), ("lr", lr())]),
        "pca-pipe": make_pipeline(PCA(2), LinearSVC()),
        "ada": AdaBoostClassifier(n_estimators=3, random_state=0),
        "nb": GaussianNB(), "ridge": Ridge(), "kmeans": KMeans(n_clusters=3, n_init=1,
                                                               random_state=0),
        "sgd": SGDClassifier(loss="log_loss", random_state=0),
        "iforest": IsolationForest(n_estimators=3, random_state=0),
        "logreg-C": lr(C=0.1), "tree-depth": DecisionTreeClassifier(max_depth=2, random_state=0),
    }


def _fitted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: e.fit(x, y) for k, e in _estimators().items()}


_ZOO = [("mlp", (1, 8, 8), {"hidden": (7,)}), ("mlp", (4,), {"hidden": (5,)}),
        ("mlp", (3,), {"hidden": (4, 4)}), ("cnn-small", (1, 8, 8), {}),
        ("lenet", (1, 28, 28), {})]


def _zoo_model(i: int):
    from advkit.models.zoo import build

    name, shape, kwargs = _ZOO[i % len(_ZOO)]
    gen = torch.Generator().manual_seed(i)
    return build(name, input_shape=shape, n_classes=2 + i % 4, generator=gen, **kwargs)


def _benign_jit(i: int):
    """A small module and an example input: zoo models and common layer stacks."""
    g = torch.Generator().manual_seed(i)
    stacks = [
        (lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), (2, 6)),
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                               nn.Linear(72, 2)), (2, 1, 8, 8)),
        (lambda: nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.GELU(), nn.Dropout(0.1),
                               nn.Linear(8, 2), nn.Softmax(dim=-1)), (3, 4)),
        (lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.Tanh(), nn.AvgPool1d(2), nn.Flatten(),
                               nn.Linear(12, 3)), (2, 2, 8)),
        (lambda: nn.Sequential(nn.Linear(5, 5), nn.Sigmoid(), nn.Linear(5, 5), nn.SiLU()), (2, 5)),
    ]
    if i < 10:
        model = _zoo_model(i // 2)
        shape = _ZOO[(i // 2) % len(_ZOO)][1]
    else:
        make, full = stacks[(i - 10) // 2 % len(stacks)]
        with torch.random.fork_rng():  # the caller's global stream is restored afterwards
            torch.manual_seed(i)  # safe: scoped by fork_rng; nn layers draw their init from it
            model = make()
        shape = full[1:]
    x = torch.rand(2, *shape, generator=g)
    return model.eval(), x


def _benign(w: _Writer) -> None:
    import joblib
    import skops.io as sio

    from advkit.models.io import save_model

    est = _fitted()
    for i, (name, e) in enumerate(sorted(est.items())):
        proto = 2 + i % 4
        w.write(pickle.dumps(e, protocol=proto), f"{name} pickle protocol {proto}",
                "scikit-learn estimator", "pickle", ".pkl", expected="benign")
        comp = (0, 3, ("gzip", 3), ("bz2", 1), ("xz", 1), ("lzma", 1), ("zlib", 3))[i % 7]
        p = w.path("joblib", "benign", f"{name} compress={comp}", ".joblib")
        joblib.dump(e, p, compress=comp)
        w.add(p, f"{name} compress={comp}", "scikit-learn estimator", "benign", "joblib")
        p = w.path("skops", "benign", name, ".skops")
        sio.dump(e, p)
        w.add(p, name, "scikit-learn estimator", "benign", "skops")
    keys = ("state_dict", "model_state_dict", "model", None)
    for i in range(20):
        model = _zoo_model(i)
        d = save_model(model, w.path("advkit", "benign", f"zoo {i}", ""))
        w.add(d, f"zoo {i}", "save_model folder", "benign", "advkit")
        d2 = save_model(model, w.path("safetensors", "benign", f"zoo {i}", ""))
        w.add(d2 / "model.safetensors", f"zoo {i}", "safetensors with config.json", "benign",
              "safetensors")
        sd = model.state_dict()
        key = keys[i % len(keys)]
        obj = sd if key is None else {key: sd, "epoch": i}
        for zipped in (True, False):
            fmt = "torch-zip" if zipped else "torch-legacy"
            p = d / f"{fmt}.pt"
            torch.save(obj, p, _use_new_zipfile_serialization=zipped)
            w.add(p, f"zoo {i} state dict ({key})", "torch.save state dict", "benign", fmt)
        model, x = _benign_jit(i)
        p = w.path("torchscript", "benign", f"module {i}", ".pt")
        _jit_save(model, p, x if i % 2 else None)
        w.add(p, f"module {i} {'traced' if i % 2 else 'scripted'}", "TorchScript archive",
              "benign", "torchscript")
