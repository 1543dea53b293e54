"""The ``backdoor`` section of the audit spec and the training data it names.

::

    backdoor:
      neural_cleanse: {epochs: 20}        # NeuralCleanse parameters; on by default, false: off
      clean_samples: 2000                 # clean data: this many points of the dataset's
                                          # training split (Neural Cleanse and its mitigations)
      mitigations: [unlearn, prune]       # Neural Cleanse's mitigations (need neural_cleanse)
      training_data:                      # the model's own training set, as a .npz
        path: train.npz                   # relative to the spec file's folder
        x: x                              # array names (defaults shown)
        y: y
        poisoned_indices: poisoned        # optional: indices (or a boolean mask) known to be
                                          # poisoned, used only to score the sanitisers
      sanitisers: [activation_clustering, spectral]   # default with training_data: all four
                                          # (activation_clustering, spectral, spectre,
                                          # label_consistency: against a model trained on the
                                          # clean data, clean_samples of the dataset);
                                          # or {spectral: {expected_rate: 0.3}} with parameters
      retrain: {epochs: 10, lr: 0.001, batch_size: 64}  # retrain on each filtered set
                                          # (models advkit can rebuild: zoo architectures)

Each parameter mapping is checked by building the registered detector with it
(``advkit.registry.create``), so a bad value fails here, before anything is loaded or trained.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator, model_validator

from advkit.audit.spec_sections import _Strict
from advkit.errors import AdvkitError, AuditSpecError, short

# spec name -> registry name of the detector
SANITISERS = {"activation_clustering": "activation_clustering", "spectral": "spectral_signatures",
              "spectre": "spectre", "label_consistency": "label_consistency"}
MITIGATIONS = ("unlearn", "prune")


class TrainingDataSpec(_Strict):
    path: str
    x: str = "x"
    y: str = "y"
    poisoned_indices: str | None = None


class RetrainSpec(_Strict):
    epochs: int = Field(default=10, ge=1, le=1000)
    lr: float = Field(default=1e-3, gt=0, le=1)
    batch_size: int = Field(default=64, ge=1)


class BackdoorSection(_Strict):
    neural_cleanse: bool | dict[str, Any] = True
    clean_samples: int = Field(default=2000, ge=10)
    mitigations: list[Literal["unlearn", "prune"]] = Field(default_factory=list)
    training_data: TrainingDataSpec | None = None
    sanitisers: dict[str, dict[str, Any]] | None = None
    retrain: bool | RetrainSpec = False

    @field_validator("sanitisers", mode="before")
    @classmethod
    def _sanitiser_list(cls, v):
        if isinstance(v, list):
            if not all(isinstance(n, str) for n in v):
                raise ValueError("list sanitiser names, e.g. [activation_clustering, spectral]")
            return {n: {} for n in v}
        if isinstance(v, dict):
            return {k: ({} if p is None else p) for k, p in v.items()}
        return v

    @field_validator("sanitisers")
    @classmethod
    def _sanitiser_names(cls, v):
        for name in v or {}:
            if name not in SANITISERS:
                raise ValueError(f"unknown sanitiser {short(name)}; sanitisers: "
                                 f"{', '.join(SANITISERS)}")
        return v

    @field_validator("mitigations")
    @classmethod
    def _unique(cls, v):
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _consistent(self):
        if self.mitigations and not self.nc_on:
            raise ValueError("mitigations use Neural Cleanse's reversed triggers: turn "
                             "neural_cleanse on or remove mitigations")
        if self.sanitisers and self.training_data is None:
            raise ValueError("sanitisers screen the model's training data: add training_data "
                             "{path: train.npz} or remove sanitisers")
        if self.retrain and not self.sanitiser_params:
            raise ValueError("retrain retrains on the set a sanitiser filtered: name sanitisers "
                             "(and training_data) or remove retrain")
        if not self.nc_on and self.training_data is None:
            raise ValueError("nothing to run: turn neural_cleanse on or add training_data")
        return self

    # -- derived ----------------------------------------------------------------------------------
    @property
    def nc_on(self) -> bool:
        return self.neural_cleanse is not False

    @property
    def nc_params(self) -> dict[str, Any]:
        return dict(self.neural_cleanse) if isinstance(self.neural_cleanse, dict) else {}

    @property
    def sanitiser_params(self) -> dict[str, dict[str, Any]]:
        """The sanitisers to run with their parameters (default with training data: both)."""
        if self.sanitisers is not None:
            return self.sanitisers
        return {n: {} for n in SANITISERS} if self.training_data is not None else {}

    @property
    def retrain_spec(self) -> RetrainSpec | None:
        if self.retrain is False:
            return None
        return RetrainSpec() if self.retrain is True else self.retrain


def parse_section(data: Any, *, source: str) -> BackdoorSection:
    """Validate the raw ``backdoor`` mapping; AuditSpecError naming the field otherwise."""
    from advkit import registry
    from advkit.audit.spec import _format_errors

    if not isinstance(data, dict):
        raise AuditSpecError(f"{source}: expected a mapping (e.g. backdoor: {{neural_cleanse: "
                             f"{{epochs: 20}}}}), got {type(data).__name__}")
    try:
        section = BackdoorSection.model_validate(data)
    except ValidationError as exc:
        raise AuditSpecError(f"{source} is not a valid backdoor section:\n"
                             f"{_format_errors(exc)}") from None
    checks = [("neural_cleanse", "neural_cleanse", section.nc_params)] if section.nc_on else []
    checks += [(f"sanitisers.{n}", SANITISERS[n], p) for n, p in section.sanitiser_params.items()]
    for where, name, params in checks:
        try:
            registry.create(name, **params)
        except AdvkitError as exc:
            raise AuditSpecError(f"{source}.{where}: {exc}") from None
    return section


# -- the training data ---------------------------------------------------------------------------
@dataclass
class TrainingData:
    """The model's training set as the target takes it, with the known poisoned indices (if
    given) and the file's SHA-256."""

    x: torch.Tensor
    y: torch.Tensor
    poisoned: torch.Tensor | None  # sorted int64 indices
    path: Path
    sha256: str

    @property
    def poisoned_mask(self) -> torch.Tensor | None:
        if self.poisoned is None:
            return None
        m = torch.zeros(len(self.y), dtype=torch.bool)
        m[self.poisoned] = True
        return m


def resolve(path: str, spec_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or spec_dir is None else spec_dir / p


def load_training_data(spec: TrainingDataSpec, *, spec_dir: Path | None, target,
                       where: str = "backdoor.training_data") -> TrainingData:
    """Read the ``.npz`` (never unpickling, within advkit's size limits) and check it against the
    target's input contract: AuditSpecError naming the array and the fix otherwise."""
    from advkit.data.npz_limits import check_npz
    from advkit.models.scan import sha256_file
    from advkit.paths import is_file

    path = resolve(spec.path, spec_dir)
    if not is_file(path, f"{where}.path"):
        raise AuditSpecError(f"{where}.path: {str(path)!r} does not exist; give the .npz of the "
                             "model's training data (relative paths are read from the spec's "
                             "folder)")
    names = [spec.x, spec.y] + ([spec.poisoned_indices] if spec.poisoned_indices else [])
    try:
        if zipfile.is_zipfile(path):
            check_npz(path)
        with np.load(path, allow_pickle=False) as z:
            missing = [n for n in names if n not in z.files]
            if missing:
                raise AuditSpecError(f"{where}: {path.name} has no array(s) {missing} (it holds "
                                     f"{sorted(z.files)}); name them with x:, y:, "
                                     "poisoned_indices:")
            arrays = {n: z[n] for n in names}
    except AuditSpecError:
        raise
    except (AdvkitError, ValueError, OSError, EOFError, AttributeError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise AuditSpecError(f"{where}: cannot read {path} as a .npz archive without unpickling "
                             f"({exc}); save it with numpy.savez") from None
    x = _inputs(arrays[spec.x], target, f"{where}: '{spec.x}'")
    y = _labels(arrays[spec.y], len(x), target.contract.n_classes, f"{where}: '{spec.y}'")
    poisoned = None
    if spec.poisoned_indices:
        poisoned = _indices(arrays[spec.poisoned_indices], len(x),
                            f"{where}: '{spec.poisoned_indices}'")
    return TrainingData(x, y, poisoned, path, sha256_file(path))


def _inputs(a: np.ndarray, target, where: str) -> torch.Tensor:
    shape = tuple(target.contract.shape)
    if a.dtype.kind not in "biuf":
        raise AuditSpecError(f"{where} has dtype {a.dtype}; inputs must be numeric")
    if a.ndim == len(shape) and shape[0] == 1:  # (N, H, W) grayscale
        a = a[:, None]
    if a.ndim != len(shape) + 1 or tuple(a.shape[1:]) != shape or len(a) == 0:
        raise AuditSpecError(f"{where} has shape {a.shape}; the model takes (N, "
                             f"{', '.join(map(str, shape))})")
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if a.dtype == np.uint8:
        x = x / 255.0
    try:
        return target.check_inputs(x)
    except AdvkitError as exc:
        raise AuditSpecError(f"{where}: {exc}") from None


def _labels(a: np.ndarray, n: int, k: int, where: str) -> torch.Tensor:
    if a.dtype.kind not in "iu" or a.shape != (n,):
        raise AuditSpecError(f"{where} has dtype {a.dtype} and shape {a.shape}; give one integer "
                             f"class index per input ({n})")
    if n and (a.min() < 0 or a.max() >= k):
        raise AuditSpecError(f"{where} holds labels in [{a.min()}, {a.max()}]; the model has {k} "
                             f"classes (0 to {k - 1})")
    return torch.from_numpy(a.astype(np.int64))


def _indices(a: np.ndarray, n: int, where: str) -> torch.Tensor:
    if a.dtype == np.bool_ and a.shape == (n,):
        return torch.from_numpy(np.flatnonzero(a).astype(np.int64))
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise AuditSpecError(f"{where} has dtype {a.dtype} and shape {a.shape}; give the indices "
                             f"of the poisoned samples (integers) or a boolean mask of length {n}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise AuditSpecError(f"{where} holds indices in [{a.min()}, {a.max()}]; the training data "
                             f"has {n} samples")
    return torch.from_numpy(np.unique(a).astype(np.int64))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
