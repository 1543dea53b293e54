"""A small zoo of reference classifiers, built by name.

Every model takes raw inputs within the dataset's bounds (no normalization layer) and returns
logits. Each built model carries ``advkit_config`` (zoo name, input shape, number of classes and
the resolved keyword arguments) so that :func:`advkit.models.io.save_model` can write a config from
which :func:`advkit.models.io.load_model` rebuilds it.

- ``mlp``: flatten, fully connected layers with ReLU (``hidden``, default ``(256, 128)``);
  ``input_range=[lo, hi]`` (per-feature bounds) rescales raw tabular features to [0, 1] first.
- ``cnn-small``: for 8x8 images such as scikit-learn's digits: two 3x3 convolutions (32 and 64
  channels, padding 1, ReLU), 2x2 max-pooling, a 128-unit layer, the output layer.
- ``lenet``: LeNet-5 for 28x28 images (LeCun, Bottou, Bengio and Haffner, "Gradient-based learning
  applied to document recognition", Proc. IEEE 1998), with ReLU and max-pooling in place of the
  original's scaled tanh and subsampling: conv 5x5 6ch (padding 2), pool, conv 5x5 16ch, pool,
  120, 84, output.
- ``cnn-madry``: the MNIST network of Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep
  Learning Models Resistant to Adversarial Attacks" (ICLR 2018): conv 5x5 32ch, pool, conv 5x5
  64ch, pool (both convolutions padded to keep the size), 1024 units, output.
- ``cnn-wong``: the MNIST network of Wong, Rice and Kolter, "Fast is better than free: Revisiting
  adversarial training" (ICLR 2020): conv 4x4 16ch stride 2, conv 4x4 32ch stride 2 (both padded
  by 1, so 28 → 14 → 7), 100 units, output; about 7x cheaper per pass than ``cnn-madry``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from advkit.errors import InvalidParameterError, check_range, image_layouts, short

ZOO_NAMES: tuple[str, ...] = ("mlp", "cnn-small", "lenet", "cnn-madry", "cnn-wong")

# limits on what a config may ask for: load_model builds models from config files it is handed
_MAX_DIM = 4096
_MAX_WIDTH = 65536
_MAX_CLASSES = 100_000

# keyword arguments each model accepts, with defaults
_KWARGS: dict[str, dict[str, object]] = {
    "mlp": {"hidden": (256, 128), "input_range": None},
    "cnn-small": {},
    "lenet": {},
    "cnn-madry": {},
    "cnn-wong": {},
}
# smallest image side each convolutional model can take, and the side it was designed for
_MIN_SIDE = {"cnn-small": (2, 8), "lenet": (12, 28), "cnn-madry": (4, 28), "cnn-wong": (4, 28)}


class ZooNet(nn.Module):
    """A zoo model: ``classifier(features(x))``; ``advkit_config`` says how it was built."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, config: dict):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.advkit_config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        c = self.advkit_config
        shape = tuple(c["input_shape"])
        return f"zoo={c['name']!r}, input_shape={shape}, n_classes={c['n_classes']}"


def _check_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise InvalidParameterError("input_shape", input_shape,
                                    "a tuple of positive ints, e.g. (1, 28, 28)")
    shape = tuple(input_shape)
    if not shape or len(shape) > 3:
        raise InvalidParameterError("input_shape", input_shape,
                                    "1 to 3 dimensions, e.g. (64,) or (1, 8, 8)")
    for d in shape:
        check_range("input_shape", d, lo=1, hi=_MAX_DIM, kind=int)
    return shape


def _image_side(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    lo, designed = _MIN_SIDE[name]
    if len(shape) != 3:
        images = image_layouts(math.prod(shape))
        reshape = (f", or store the data's x as (n, {', '.join(map(str, images[0]))}) if its "
                   f"{math.prod(shape)} values are {images[0][1]}x{images[0][2]} images"
                   if images else "")
        raise InvalidParameterError(
            "input_shape", shape,
            f"(channels, height, width) for {name!r}, e.g. (1, {designed}, {designed}); "
            f"the data's samples have shape {shape}: use the 'mlp' zoo model for flat feature "
            f"vectors{reshape}",
        )
    c, h, w = shape
    if h < lo or w < lo:
        raise InvalidParameterError(
            "input_shape", shape,
            f"images of at least {lo}x{lo} for {name!r} (designed for {designed}x{designed}); "
            f"got {h}x{w}" + ("; use 'cnn-small' for 8x8 images" if h < lo <= 12 else ""),
        )
    return c, h, w


def _resolve_kwargs(name: str, kwargs: dict) -> dict:
    allowed = _KWARGS[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        what = ", ".join(allowed) if allowed else "none"
        raise InvalidParameterError(unknown[0], kwargs[unknown[0]],
                                    f"a keyword argument of {name!r} ({what})")
    out = {**allowed, **kwargs}
    if name == "mlp":
        hidden = out["hidden"]
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise InvalidParameterError("hidden", hidden,
                                        "a sequence of positive ints, e.g. (256, 128)")
        for h in hidden:
            check_range("hidden", h, lo=1, hi=_MAX_WIDTH, kind=int)
        out["hidden"] = tuple(int(h) for h in hidden)
        if out["input_range"] is None:
            del out["input_range"]  # configs of models without it stay as they were
        else:
            out["input_range"] = _check_range_kwarg(out["input_range"])
    return out


def _check_range_kwarg(value) -> list[list[float]]:
    """``input_range`` of an mlp: ``[lo, hi]``, two lists of per-feature bounds."""
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, list | tuple) and len(v) == len(value[0]) and 0 < len(v) <= _MAX_DIM
        for v in value)
    if ok:
        lo, hi = (np.asarray(v, dtype=np.float64) for v in value)
        ok = bool(np.isfinite(lo).all() and np.isfinite(hi).all() and (lo <= hi).all())
    if not ok:
        raise InvalidParameterError("input_range", short(value),
                                    "[lo, hi]: two equally long lists of finite per-feature "
                                    "bounds with lo <= hi")
    return [[float(v) for v in value[0]], [float(v) for v in value[1]]]


class Rescale(nn.Module):
    """``(x - lo) / (hi - lo)`` per feature (a constant feature maps to 0): a zoo model trained
    on raw tabular features normalizes inside its forward (DESIGN: advkit feeds raw inputs)."""

    def __init__(self, lo, hi):
        super().__init__()
        lo_t = torch.tensor(lo, dtype=torch.float32)
        span = torch.tensor(hi, dtype=torch.float32) - lo_t
        self.register_buffer("lo", lo_t)
        self.register_buffer("inv_span", torch.where(span > 0, 1.0 / span.clamp_min(1e-30), 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.lo) * self.inv_span


def _mlp(shape, k, hidden) -> tuple[nn.Sequential, nn.Sequential]:
    layers: list[nn.Module] = []
    width = math.prod(shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(nn.Flatten()), nn.Sequential(*layers, nn.Linear(width, k))


def _cnn_small(shape, k) -> tuple[nn.Sequential, nn.Sequential]:
    c, h, w = shape
    feats = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
    )
    n = 64 * (h // 2) * (w // 2)
    return feats, nn.Sequential(nn.Linear(n, 128), nn.ReLU(), nn.Linear(128, k))


def _lenet(shape, k) -> tuple[nn.Sequential, nn.Sequential]:
    c, h, w = shape
    feats = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    )
    n = 16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2)
    return feats, nn.Sequential(nn.Linear(n, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                nn.Linear(84, k))


def _cnn_madry(shape, k) -> tuple[nn.Sequential, nn.Sequential]:
    c, h, w = shape
    feats = nn.Sequential(
        nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    )
    n = 64 * (h // 4) * (w // 4)
    return feats, nn.Sequential(nn.Linear(n, 1024), nn.ReLU(), nn.Linear(1024, k))


def _cnn_wong(shape, k) -> tuple[nn.Sequential, nn.Sequential]:
    c, h, w = shape
    feats = nn.Sequential(
        nn.Conv2d(c, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
    )
    n = 32 * (h // 4) * (w // 4)
    return feats, nn.Sequential(nn.Linear(n, 100), nn.ReLU(), nn.Linear(100, k))


def _reinit(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Linear/Conv initialization, drawn from ``generator``."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def build(name: str, *, input_shape: tuple, n_classes: int,
          generator: torch.Generator | None = None, **kwargs) -> nn.Module:
    """Build the zoo model ``name`` for per-sample ``input_shape`` and ``n_classes`` classes.

    ``generator`` (a CPU ``torch.Generator``) draws the initial weights, so that the same seed
    gives the same model; without it PyTorch's default random stream is used. Other keyword
    arguments are model options (``mlp``: ``hidden``). The model is returned in eval mode.
    """
    if name not in ZOO_NAMES:
        raise InvalidParameterError("name", name, f"a zoo model, one of {', '.join(ZOO_NAMES)}")
    shape = _check_shape(input_shape)
    check_range("n_classes", n_classes, lo=2, hi=_MAX_CLASSES, kind=int)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidParameterError("generator", type(generator).__name__,
                                    "a torch.Generator or None")
    kw = _resolve_kwargs(name, kwargs)
    if name == "mlp":
        feats, head = _mlp(shape, n_classes, kw["hidden"])
        if kw.get("input_range") is not None:
            if len(kw["input_range"][0]) != math.prod(shape):
                raise InvalidParameterError(
                    "input_range", f"{len(kw['input_range'][0])} features",
                    f"one bound per input feature ({math.prod(shape)})")
            feats = nn.Sequential(Rescale(*kw["input_range"]), *feats)
    else:
        make = {"cnn-small": _cnn_small, "lenet": _lenet, "cnn-madry": _cnn_madry,
                "cnn-wong": _cnn_wong}[name]
        feats, head = make(_image_side(name, shape), n_classes)
    config = {"name": name, "input_shape": shape, "n_classes": int(n_classes), "kwargs": kw}
    model = ZooNet(feats, head, config)
    if generator is not None:
        _reinit(model, generator)
    return model.eval()


def kwargs_for_data(name: str, kwargs: dict, info) -> dict:
    """``kwargs`` of the zoo model ``name`` trained on data described by ``info`` (a
    DatasetInfo): an ``mlp`` on tabular features outside [0, 1] gets ``input_range`` from the
    per-feature bounds, so that it trains and runs on the raw features."""
    fs = getattr(info, "feature_space", None)
    if name != "mlp" or fs is None or "input_range" in kwargs:
        return dict(kwargs)
    if min(fs.lo) >= 0.0 and max(fs.hi) <= 1.0:
        return dict(kwargs)
    return {**kwargs, "input_range": [list(fs.lo), list(fs.hi)]}
