"""Gradient-boosted trees from their own data formats: XGBoost JSON and LightGBM text or JSON.

These formats are data (trees of thresholds and leaf values), not code, so they are loaded without
any trust flag:

- XGBoost ``booster.save_model("m.json")`` (or ``XGBClassifier.save_model``), read with
  ``xgboost.Booster().load_model`` (needs the ``xgboost`` package);
- LightGBM ``booster.save_model("m.txt")`` (text starting ``tree\\nversion=``), read with
  ``lightgbm.Booster(model_file=...)`` (needs ``lightgbm``);
- LightGBM ``booster.dump_model()`` written as JSON, which LightGBM itself cannot load back: advkit
  evaluates its trees with numpy (no package needed).

Each becomes a :class:`BoosterClassifier`: an estimator with ``predict_proba`` / ``predict`` /
``classes_`` / ``n_features_in_`` that :class:`advkit.targets.sklearn.SklearnTarget` wraps as a
labels-and-probabilities target (trees have no input gradients). Only classifiers are accepted
(XGBoost ``binary:*`` / ``multi:*``; LightGBM ``binary``, ``multiclass``, ``multiclassova``,
``cross_entropy``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from advkit.errors import InputContractError, MissingDependencyError

FORMATS = ("xgboost", "lightgbm", "lightgbm-json")
_PROBE_BYTES = 4096
_MAX_VALIDATE_BYTES = 64 << 20
_XGB_HEAD = re.compile(rb'^\s*\{\s*"learner"\s*:')
_LGB_JSON_HEAD = re.compile(rb'^\s*\{\s*"name"\s*:\s*"tree"\s*,\s*"version"\s*:')
_LGB_TEXT_HEAD = b"tree\nversion="


def detect(p: Path) -> tuple[str | None, str | None]:
    """(format, problem): the booster format the file at ``p`` has by content (or None), and what
    is wrong with a file that starts like one but is not valid."""
    with open(p, "rb") as f:
        head = f.read(_PROBE_BYTES)
    if head.startswith(_LGB_TEXT_HEAD):
        return "lightgbm", None if b"\nTree=" in _head(p) else "a LightGBM text header, no tree"
    kind = "xgboost" if _XGB_HEAD.match(head) else "lightgbm-json" if _LGB_JSON_HEAD.match(head) \
        else None
    if kind is None:
        return None, None
    if p.stat().st_size > _MAX_VALIDATE_BYTES:
        return kind, None
    try:
        doc = json.loads(p.read_bytes())
    except (ValueError, RecursionError) as exc:
        return kind, f"not valid JSON ({str(exc)[:120]})"
    key = "learner" if kind == "xgboost" else "tree_info"
    ok = isinstance(doc, dict) and isinstance(doc.get(key), dict if kind == "xgboost" else list)
    return kind, None if ok else f"a JSON document without the {key!r} of this format"


def _head(p: Path) -> bytes:
    with open(p, "rb") as f:
        return f.read(1 << 20)


class BoosterClassifier:
    """A fitted tree ensemble with the scikit-learn classifier interface advkit needs."""

    def __init__(self, proba, n_classes: int, n_features: int, objective: str):
        self._proba = proba
        self.classes_ = np.arange(n_classes)
        self.n_features_in_ = n_features
        self.objective = objective

    def predict_proba(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.n_features_in_:
            raise InputContractError(
                f"the model takes {self.n_features_in_} features, got {x.shape[1]}; audit it "
                "with the data it was trained on")
        return np.asarray(self._proba(x), dtype=np.float64)

    def predict(self, x) -> np.ndarray:
        return self.predict_proba(x).argmax(1)


class XGBoostClassifier(BoosterClassifier):
    """An XGBoost booster read from its JSON format."""


class LightGBMClassifier(BoosterClassifier):
    """A LightGBM booster read from its text format or its ``dump_model()`` JSON."""


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _binary(p1):
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1)
    return np.stack([1.0 - p1, p1], 1)


def _not_classifier(p: Path, library: str, objective: str) -> InputContractError:
    return InputContractError(
        f"{p} is a {library} model with the objective {objective!r}, not a classifier; advkit "
        "audits classifiers (XGBoost binary:* / multi:*, LightGBM binary / multiclass)")


def load_booster(p: Path, kind: str) -> BoosterClassifier:
    """Load the booster file ``p`` of format ``kind`` (one of :data:`FORMATS`)."""
    try:
        if kind == "xgboost":
            return _load_xgboost(p)
        if kind == "lightgbm":
            return _load_lightgbm(p)
        return _load_lightgbm_json(p)
    except (InputContractError, MissingDependencyError):
        raise
    except Exception as exc:  # noqa: BLE001 - the libraries raise their own error types
        raise InputContractError(f"{p} is not a loadable {kind} model: {exc}") from exc


def _load_xgboost(p: Path) -> BoosterClassifier:
    try:
        import xgboost
    except ImportError:
        raise MissingDependencyError("loading an XGBoost model", "xgboost") from None
    booster = xgboost.Booster()
    booster.load_model(str(p))
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    n_classes = max(2, int(learner["learner_model_param"].get("num_class", "0")))

    def margin(x):
        return booster.predict(xgboost.DMatrix(x), output_margin=True, validate_features=False)

    if objective in ("binary:logistic", "binary:logitraw"):
        proba = lambda x: _binary(_sigmoid(margin(x)))  # noqa: E731
    elif objective == "binary:hinge":
        proba = lambda x: _binary(margin(x) > 0)  # noqa: E731
    elif objective in ("multi:softprob", "multi:softmax"):
        proba = lambda x: _softmax(np.asarray(margin(x), np.float64).reshape(len(x), -1))  # noqa: E731
    else:
        raise _not_classifier(p, "XGBoost", objective)
    return XGBoostClassifier(proba, n_classes, int(booster.num_features()), objective)


def _lgb_proba(objective: str, n_classes: int, raw: bool):
    """The probabilities from LightGBM's output (raw scores when ``raw``) for ``objective``."""
    name, _, rest = objective.partition(" ")
    scale = float(m.group(1)) if (m := re.search(r"sigmoid:([0-9.eE+-]+)", rest)) else 1.0
    if name in ("binary", "cross_entropy", "xentropy"):
        return lambda out: _binary(_sigmoid(scale * out) if raw else out)
    if name in ("multiclass", "softmax"):
        return lambda out: _softmax(out) if raw else out
    if name in ("multiclassova", "multiclass_ova", "ova", "ovr"):
        def ova(out):
            s = _sigmoid(scale * out) if raw else out
            return s / np.clip(s.sum(1, keepdims=True), 1e-300, None)
        return ova
    return None


def _load_lightgbm(p: Path) -> BoosterClassifier:
    try:
        import lightgbm
    except ImportError:
        raise MissingDependencyError("loading a LightGBM model", "lightgbm") from None
    booster = lightgbm.Booster(model_file=str(p))
    header = _head(p).split(b"\nTree=", 1)[0].decode("utf-8", "replace")
    found = re.search(r"^objective=(.*)$", header, re.M)
    objective = found.group(1).strip() if found else "?"
    n_classes = max(2, int(m.group(1)) if (m := re.search(r"^num_class=(\d+)$", header, re.M))
                    else 1)
    transform = _lgb_proba(objective, n_classes, raw=False)
    if transform is None:
        raise _not_classifier(p, "LightGBM", objective)
    return LightGBMClassifier(lambda x: transform(booster.predict(x)), n_classes,
                              int(booster.num_feature()), objective)


def _load_lightgbm_json(p: Path) -> BoosterClassifier:
    try:
        doc = json.loads(p.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise InputContractError(f"{p} is not valid JSON: {str(exc)[:200]}") from exc
    objective = str(doc.get("objective", "?"))
    n_classes = max(2, int(doc.get("num_class", 1)))
    transform = _lgb_proba(objective, n_classes, raw=True)
    if transform is None:
        raise _not_classifier(p, "LightGBM", objective)
    trees = [t["tree_structure"] for t in doc["tree_info"]]
    n_features = int(doc["max_feature_idx"]) + 1
    for tree in trees:
        _check_tree(tree, n_features)
    per_iter = int(doc.get("num_tree_per_iteration", 1))
    if per_iter != (n_classes if n_classes > 2 else 1):
        raise InputContractError(f"{p}: num_tree_per_iteration {per_iter} does not fit "
                                 f"num_class {doc.get('num_class')}")
    average = bool(doc.get("average_output")) and trees

    def raw(x):
        out = np.zeros((len(x), per_iter))
        for i, tree in enumerate(trees):
            out[:, i % per_iter] += _tree_values(tree, x)
        if average:
            out /= max(1, len(trees) // per_iter)
        return out if per_iter > 1 else out[:, 0]

    return LightGBMClassifier(lambda x: transform(raw(x.astype(np.float64))), n_classes,
                              n_features, objective)


def _tree_values(node: dict, x: np.ndarray) -> np.ndarray:
    """The leaf value each row of ``x`` reaches in the dumped tree ``node`` (iteratively)."""
    out = np.zeros(len(x))
    stack = [(node, np.arange(len(x)))]
    while stack:
        nd, rows = stack.pop()
        if not rows.size:
            continue
        if "leaf_value" in nd:
            out[rows] = float(nd["leaf_value"])
            continue
        v = x[rows, int(nd["split_feature"])]
        missing = nd.get("missing_type", "None")
        nan = np.isnan(v)
        if nd.get("decision_type", "<=") == "==":
            cats = {int(c) for c in str(nd["threshold"]).split("||") if c}
            left = np.array([not n and c >= 0 and int(c) in cats for c, n in zip(v, nan, strict=True)], bool)
        else:
            vv = np.where(nan & (missing != "NaN"), 0.0, v)
            left = vv <= float(nd["threshold"])
            if missing in ("Zero", "NaN"):
                default = np.abs(vv) <= 1e-35 if missing == "Zero" else nan
                left = np.where(default, bool(nd.get("default_left", True)), left)
        stack.append((nd["left_child"], rows[left]))
        stack.append((nd["right_child"], rows[~left]))
    return out


def _check_tree(root, n_features: int) -> None:
    """Every node of a dumped tree is a leaf (``leaf_value``) or a split with both children."""
    stack = [root]
    while stack:
        nd = stack.pop()
        if not isinstance(nd, dict):
            raise InputContractError(f"a tree node is a {type(nd).__name__}, not an object")
        if "leaf_value" in nd:
            float(nd["leaf_value"])
            continue
        if not 0 <= int(nd["split_feature"]) < n_features:
            raise InputContractError(f"a split on feature {nd['split_feature']} of {n_features}")
        if nd.get("decision_type", "<=") not in ("<=", "=="):
            raise InputContractError(f"unknown decision_type {nd.get('decision_type')!r}")
        stack.extend((nd["left_child"], nd["right_child"]))
