"""The models the playground offers: fixed when the server starts, never a path from a browser.

- ``default``: the built-in audit's model (``advkit.audit.spec.default_spec``: a cnn-small trained on
  digits), trained on first use and cached like every zoo model;
- the zoo models already in the model cache (``advkit.models.cache``) that were trained on a
  built-in image dataset;
- the model files or folders named with ``advkit serve --model PATH``, loaded through the same safe
  loader as ``advkit audit`` (``advkit.models.io.load_model``); each must say (its advkit config)
  which built-in dataset it takes.

A browser picks a model by its key in this table; anything else is a 404.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from advkit.errors import AdvkitError, InputContractError, WebRequestError

log = logging.getLogger("advkit.serve")
MAX_CACHED = 40  # cached zoo models listed at most


@dataclass
class ModelChoice:
    key: str
    label: str
    dataset: str
    path: Path | None = None  # None: the default model, trained (or read from the cache) on use
    _loaded: tuple | None = field(default=None, repr=False)

    def load(self):
        """``(target, dataset)``, loaded once."""
        if self._loaded is None:
            from advkit.data import load
            from advkit.models.io import load_model, target_for

            ds = load(self.dataset)
            if ds.info.kind != "image":
                raise InputContractError(f"{self.label}: the playground shows images; "
                                         f"{self.dataset!r} is tabular")
            if self.path is None:
                from advkit.audit.spec import default_spec
                from advkit.models.cache import trained_zoo_model

                spec = default_spec()
                model, _ = trained_zoo_model(ds, spec.model, seed=spec.seed)
            else:
                model = load_model(self.path).model
            self._loaded = (target_for(model, ds, batch_size=256), ds)
        return self._loaded


def _config_dataset(folder: Path) -> tuple[str | None, dict]:
    try:
        with (folder / "config.json").open("rb") as f:
            cfg = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None, {}
    ds = cfg.get("dataset") if isinstance(cfg, dict) else None
    name = ds.get("name") if isinstance(ds, dict) else None
    return (name if isinstance(name, str) else None), cfg


def cached_models() -> list[ModelChoice]:
    """Zoo models in the model cache trained on a built-in image dataset (newest first)."""
    from advkit.data.datasets import available
    from advkit.models.cache import cache_root

    root = cache_root() / "models"
    known = {k for k, ok in available().items() if ok}
    out = []
    try:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and ".tmp" not in p.name),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []
    for p in folders:
        name, cfg = _config_dataset(p)
        if name not in known or (cfg.get("dataset") or {}).get("kind", "image") != "image":
            continue
        tag = ((cfg.get("extra") or {}).get("training") or {}).get("tag") or ""
        label = f"{cfg.get('zoo', '?')} on {name} (cache {p.name[-8:]}{', ' + tag if tag else ''})"
        out.append(ModelChoice(f"cache-{p.name}", label, name, p))
        if len(out) >= MAX_CACHED:
            break
    return out


def file_model(path: Path, index: int) -> ModelChoice:
    """A model named on the command line; checked now (``advkit serve`` fails at start)."""
    from advkit.models.io import load_model

    path = Path(path)
    loaded = load_model(path)  # refuses unsafe files before the server starts
    folder = path if path.is_dir() else path.parent
    name, _ = _config_dataset(folder)
    name = name or (loaded.config.get("dataset") or {}).get("name")
    if not isinstance(name, str):
        raise InputContractError(f"{path}: the model does not say which dataset it takes (no "
                                 "advkit config.json); save it with `advkit train` or save_model")
    return ModelChoice(f"file-{index}", f"{path.name} ({name})", name, path)


class ModelTable:
    """The models of one server, by key; each loaded on first use (one at a time)."""

    def __init__(self, files: list[Path] | None = None, *, scan_cache: bool = True):
        self.choices: dict[str, ModelChoice] = {
            "default": ModelChoice("default", "default: cnn-small on digits", "digits")}
        for i, p in enumerate(files or []):
            c = file_model(p, i)
            self.choices[c.key] = c
        if scan_cache:
            for c in cached_models():
                self.choices.setdefault(c.key, c)
        self._lock = threading.Lock()

    def get(self, key: str) -> ModelChoice:
        choice = self.choices.get(key) if isinstance(key, str) else None
        if choice is None:
            raise WebRequestError("unknown model; pick one from the list the page offers", 404)
        return choice

    def load(self, key: str):
        choice = self.get(key)
        with self._lock:
            try:
                return choice.load()
            except AdvkitError as exc:
                raise WebRequestError(f"the model {choice.label} could not be loaded: {exc}",
                                      422) from None
