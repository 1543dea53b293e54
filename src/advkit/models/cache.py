"""Zoo models trained on the fly, cached in the user cache directory by a hash of data and recipe.

``train_recipe`` is the one cached trainer every part of advkit shares: the audited model of a
``model: {zoo: ...}`` spec (``trained_zoo_model``), the poisoned models of the poisoning family,
and later adversarial training and shadow models. A ``Recipe`` is a zoo architecture plus its
training settings; the cache key hashes the training data, the recipe, the seed, a ``tag`` and
the advkit version, so the same inputs always give the same (bit-identical) model, trained once.

Every cache key (``cache_folder``) also holds torch's intra-op thread count
(``torch.get_num_threads()``): training at 1 and at 2 threads sums gradients in different orders
and gives models that differ in their last bits, so a model cached by a 2-thread run and served to
a 1-thread run would make that run differ from a fresh 1-thread run. With the count in the key a
run is served only what it would have trained itself (a different count trains once more). The
ray executor sets each worker's count to the driver's before a stage runs
(``advkit.audit.executors.ray_executor``), so Ray and local runs on one machine share the keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import advkit
from advkit.errors import AdvkitError, InvalidParameterError, check_choice, check_range

log = logging.getLogger("advkit.models")


def cache_root() -> Path:
    """``$ADVKIT_CACHE_DIR`` or the platform's user cache directory for advkit (one for data
    and models: :func:`advkit.data.datasets.cache_directory`)."""
    from advkit.data.datasets import cache_directory

    return cache_directory()


def cache_folder(kind: str, tag: str, recipe: dict, *tensors: torch.Tensor) -> Path:
    """``cache_root()/kind/tag-HASH``: the hash covers the recipe (JSON), torch's thread count
    (training round-off depends on it; see the module docstring) and the tensors' bytes."""
    keyed = {**recipe, "torch_threads": torch.get_num_threads()}
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode())
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return cache_root() / kind / f"{tag}-{h.hexdigest()[:24]}"


def load_cached(folder: Path):
    """The LoadedModel saved in ``folder``, or None when absent; a damaged entry is removed."""
    from advkit.models.io import load_model

    if not (folder / "config.json").is_file():
        return None
    try:
        loaded = load_model(folder)
    except AdvkitError as exc:  # a damaged cache entry is rebuilt, never trusted
        log.warning("ignoring damaged model cache %s: %s", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    log.info("loaded cached model from %s", folder)
    return loaded


def store(model, folder: Path, *, dataset_info, extra: dict) -> None:
    """Save ``model`` into ``folder`` atomically; a read-only cache only costs time."""
    from advkit.models.io import save_model

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        save_model(model, tmp, dataset_info=dataset_info, extra=extra)
        tmp.rename(folder)  # atomic; another process may have won the race
    except OSError as exc:
        log.warning("could not cache %s: %s", folder, exc)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Recipe:
    """A zoo architecture plus the settings it is trained with (``advkit.models.train.train``).

    ``zoo``: a name of ``advkit.models.zoo.ZOO_NAMES``; ``kwargs``: its options (``mlp``:
    ``hidden``); ``epochs``, ``lr``, ``batch_size``, ``weight_decay``; ``lr_schedule``:
    ``constant``, ``cyclic`` or ``step`` (the rate times 0.1 after each epoch of
    ``lr_milestones``); ``optimizer``: ``adam`` or ``sgd`` (momentum 0.9); ``dp``: None, or
    the settings of DP-SGD (``advkit.defenses.training.dp.DPSGD``: ``noise_multiplier``,
    ``max_grad_norm``, ``delta``, ``accountant``) to train with it instead (constant rate).
    """

    zoo: str
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    lr_schedule: str = "constant"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    lr_milestones: tuple[int, ...] = ()
    dp: dict[str, Any] | None = None

    def __post_init__(self):
        from advkit.models.train import LR_SCHEDULES, OPTIMIZERS, check_milestones
        from advkit.models.zoo import ZOO_NAMES

        check_choice("zoo", self.zoo, ZOO_NAMES)
        check_range("epochs", self.epochs, lo=1, kind=int)
        check_range("batch_size", self.batch_size, lo=1, kind=int)
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InvalidParameterError(name, v, "a number")
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        object.__setattr__(self, "lr_milestones",
                           check_milestones(self.lr_schedule, self.lr_milestones, self.epochs))
        if not isinstance(self.kwargs, dict):
            raise InvalidParameterError("kwargs", self.kwargs, "a mapping of model options")
        if self.dp is not None:
            object.__setattr__(self, "dp", self.dp_sgd().as_dict())
            if self.lr_schedule != "constant":
                raise InvalidParameterError("lr_schedule", self.lr_schedule,
                                            "'constant' when the recipe trains with dp")

    def dp_sgd(self):
        """The recipe's DPSGD (None without ``dp``); a bad setting raises the parameter error."""
        if self.dp is None:
            return None
        from advkit.defenses.training.dp import DPSGD
        from advkit.params import check_values

        if not isinstance(self.dp, dict):
            raise InvalidParameterError("dp", self.dp, "a mapping of DP-SGD settings, e.g. "
                                        "{noise_multiplier: 1.0, max_grad_norm: 1.0}")
        check_values(DPSGD, self.dp)
        return DPSGD(**self.dp)

    @classmethod
    def from_spec(cls, model_spec, **overrides) -> Recipe:
        """The recipe of a spec's ``model: {zoo: ...}`` section, with ``overrides`` (None values
        are ignored) for settings the section does not hold (e.g. ``lr_schedule``)."""
        base = {"zoo": model_spec.zoo, "epochs": model_spec.epochs, "lr": model_spec.lr,
                "batch_size": model_spec.batch_size, "kwargs": dict(model_spec.kwargs)}
        for name in ("lr_schedule", "optimizer", "weight_decay", "lr_milestones", "dp"):
            if getattr(model_spec, name, None) is not None:  # once ModelSpec holds them
                base[name] = getattr(model_spec, name)
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    def as_dict(self) -> dict[str, Any]:
        """The recipe as plain data (``lr_milestones`` only when set, as a list, so recipes
        without one keep the cache keys they had before it existed)."""
        d = asdict(self)
        ms = d.pop("lr_milestones")
        if d["dp"] is None:  # recipes without DP keep their cache keys
            del d["dp"]
        return {**d, "lr_milestones": list(ms)} if ms else d


def _data_hash(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def train_recipe(
    x: torch.Tensor, y: torch.Tensor, recipe: Recipe, *, info, seed: int, tag: str = "",
    progress: bool | None = None, batch_hook=None, data_sha256: str | None = None,
    cache: bool = True,
):
    """Train ``recipe`` on ``(x, y)`` once; return (model in eval mode, facts dict).

    ``info``: the data's DatasetInfo (input shape, classes; tabular feature bounds resolve an
    ``mlp``'s ``input_range``). ``seed`` draws the initial weights and the batch order (one
    ``torch.Generator``). The model is cached under ``cache_root()/models/ZOO-HASH``; the hash
    covers the data (``data_sha256`` when the caller already has one, else the tensors' bytes),
    the recipe with its resolved options, the seed, ``tag`` (name any ``batch_hook`` here: the
    hook itself cannot be hashed) and the advkit version. A missing or damaged entry is trained
    again, deterministically. ``facts``: ``cache`` (the folder), ``trained_now``,
    ``train_seconds``, ``history`` (per-epoch loss and accuracy), ``recipe`` and ``seed``, and
    with a ``dp`` recipe ``dp`` (its settings, the accountant's ``epsilon``, ``steps``).
    """
    from advkit.models.train import train
    from advkit.models.zoo import build, kwargs_for_data

    if not isinstance(recipe, Recipe):
        raise InvalidParameterError("recipe", type(recipe).__name__, "an advkit Recipe")
    kwargs = kwargs_for_data(recipe.zoo, recipe.kwargs, info)
    config = {"recipe": {**recipe.as_dict(), "kwargs": kwargs}, "seed": int(seed), "tag": tag,
              "data_sha256": data_sha256 or _data_hash(x, y), "advkit": advkit.__version__}
    folder = cache_folder("models", recipe.zoo, config)
    facts = {"cache": str(folder), "recipe": recipe.as_dict(), "seed": int(seed), "tag": tag}
    loaded = load_cached(folder) if cache else None
    if loaded is not None:
        saved = loaded.config.get("extra", {}).get("training", {})
        dp = {"dp": saved["dp"]} if "dp" in saved else {}
        return loaded.model.eval(), {**facts, "trained_now": False,
                                     "train_seconds": saved.get("train_seconds"),
                                     "history": saved.get("history"), **dp}
    gen = torch.Generator().manual_seed(int(seed))
    model = build(recipe.zoo, input_shape=tuple(info.shape), n_classes=info.n_classes,
                  generator=gen, **kwargs)
    dp = {}
    if recipe.dp is not None:
        if batch_hook is not None:
            raise InvalidParameterError("dp", recipe.dp, "None when training with a batch hook "
                                        "(DP-SGD accounts for the training data as given)")
        hist, dp_facts = recipe.dp_sgd().train(
            model, x, y, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
            weight_decay=recipe.weight_decay, optimizer=recipe.optimizer, generator=gen)
        dp = {"dp": dp_facts}
    else:
        hist = train(model, x, y, epochs=recipe.epochs, batch_size=recipe.batch_size,
                     lr=recipe.lr, weight_decay=recipe.weight_decay,
                     lr_schedule=recipe.lr_schedule, lr_milestones=recipe.lr_milestones,
                     optimizer=recipe.optimizer, generator=gen, progress=progress,
                     batch_hook=batch_hook)
    history = {"loss": hist.loss, "accuracy": hist.accuracy}
    if cache:
        store(model, folder, dataset_info=info,
              extra={"training": {**config, "train_seconds": hist.total_seconds,
                                  "history": history, **dp}})
    return model.eval(), {**facts, "trained_now": True, "train_seconds": hist.total_seconds,
                          "history": history, **dp}


def trained_zoo_model(
    ds, model_spec, *, seed: int, progress: bool | None = None, batch_hook=None, tag: str = ""
):
    """Return (model in eval mode, info dict): the spec's zoo model trained on ``ds``'s training
    split through :func:`train_recipe` (loaded from the cache, or trained and cached).

    The cache key hashes the dataset's SHA-256, the model spec, the seed, ``tag`` (name any
    ``batch_hook`` here: the hook itself cannot be hashed) and the advkit version.
    """
    recipe = Recipe.from_spec(model_spec)
    model, facts = train_recipe(ds.x_train, ds.y_train, recipe, info=ds.info, seed=seed, tag=tag,
                                progress=progress, batch_hook=batch_hook,
                                data_sha256=ds.sha256())
    info = {"name": f"{model_spec.zoo} (trained on the fly)", "zoo": model_spec.zoo,
            "epochs": model_spec.epochs, "recipe": facts["recipe"], "cache": facts["cache"],
            "trained_now": facts["trained_now"]}
    if facts.get("train_seconds") is not None:
        info["train_seconds"] = facts["train_seconds"]
    if "dp" in facts:  # the accountant's epsilon, reported with the model
        info["dp"] = facts["dp"]
    return model, info
