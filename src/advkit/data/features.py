"""Per-feature bounds and constraints of tabular data, and the unit space attacks work in.

Tabular features have their own ranges (breast_cancer: ``worst area`` in [185, 4254], ``mean
smoothness`` in [0.05, 0.16]), so one eps in raw units means nothing. advkit attacks a tabular
model in the *unit space* ``z_j = (x_j - lo_j) / (hi_j - lo_j)``: eps is a fraction of each
feature's range, and the per-feature bounds are the unit box that every attack already clips to
after every step. A :class:`FeatureSpace` holds the bounds and the declared constraints:

- **immutable** features are never changed: they get no gradient during an attack, and the final
  projection resets them to the input's value;
- **integer** features take integer raw values;
- **one-hot groups** hold exactly one 1 (a categorical column encoded one feature per level);
- a feature with ``lo == hi`` (constant in the data, or declared so) cannot move.

During an attack the model is only ever queried on points whose integer and one-hot features are
repaired (:meth:`FeatureSpace.repair`: rounded, argmax), with the identity as their gradient
(straight-through, as BPDA in Athalye, Carlini & Wagner 2018): attacks search the space the model
really sees. :meth:`FeatureSpace.project` is the final projection of each attack's result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advkit.errors import InputContractError


@dataclass(frozen=True)
class FeatureSpace:
    """Names, raw bounds ``[lo_j, hi_j]`` and constraints (indices) of ``d`` tabular features."""

    names: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    immutable: tuple[int, ...] = ()
    integer: tuple[int, ...] = ()
    one_hot: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self):
        d = len(self.names)
        if len(self.lo) != d or len(self.hi) != d:
            raise InputContractError(f"feature bounds need {d} values each, got {len(self.lo)} "
                                     f"and {len(self.hi)}")
        for j, (a, b) in enumerate(zip(self.lo, self.hi, strict=True)):
            if not (np.isfinite(a) and np.isfinite(b) and a <= b):
                raise InputContractError(f"feature {self.names[j]!r}: bounds [{a}, {b}] must be "
                                         "finite with lo <= hi")
        for idx in (*self.immutable, *self.integer, *(j for g in self.one_hot for j in g)):
            if not 0 <= idx < d:
                raise InputContractError(f"feature index {idx} is outside 0..{d - 1}")

    @property
    def d(self) -> int:
        return len(self.names)

    def _lo_span(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.tensor(self.lo, dtype=torch.float64)
        span = torch.tensor(self.hi, dtype=torch.float64) - lo
        return lo.to(like.device, like.dtype), span.to(like.device, like.dtype)

    # -- the two spaces --------------------------------------------------------------------
    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features (n, d) to the unit space; a constant feature (span 0) maps to 0."""
        x64 = x.to(torch.float64)
        lo, span = self._lo_span(x64)
        z = torch.where(span > 0, (x64 - lo) / torch.where(span > 0, span, 1.0), 0.0)
        return z.clamp(0.0, 1.0).to(x.dtype)

    def from_unit(self, z: torch.Tensor) -> torch.Tensor:
        """Unit-space points (n, d) to raw features (differentiable)."""
        lo, span = self._lo_span(z)
        return lo + span * z

    # -- constraints -------------------------------------------------------------------------
    def _hard(self, z: torch.Tensor) -> torch.Tensor:
        """Integer features rounded (in raw units, kept within the bounds) and one-hot groups set
        to their largest member; other features as they are. No gradient."""
        out = z.detach().clone()
        if self.integer:
            idx = list(self.integer)
            lo, span = self._lo_span(out)
            raw = (lo + span * out)[:, idx]
            low, high = torch.ceil(lo[idx] - 1e-6), torch.floor(lo[idx] + span[idx] + 1e-6)
            r = torch.minimum(torch.maximum(raw.round(), low), high)
            out[:, idx] = torch.where(span[idx] > 0, (r - lo[idx]) / span[idx].clamp_min(1e-30),
                                      0.0)
        for g in self.one_hot:
            g = list(g)
            k = out[:, g].argmax(1)
            out[:, g] = torch.nn.functional.one_hot(k, len(g)).to(out.dtype)
        return out

    def repair(self, z: torch.Tensor) -> torch.Tensor:
        """What the model is given during an attack: integer and one-hot features repaired with a
        straight-through gradient, immutable features without gradient (values unchanged)."""
        if not (self.integer or self.one_hot or self.immutable):
            return z
        if self.integer or self.one_hot:
            z = z + (self._hard(z) - z).detach()
        if self.immutable and z.requires_grad:
            keep = torch.zeros(self.d, dtype=torch.bool, device=z.device)
            keep[list(self.immutable)] = True
            z = torch.where(keep, z.detach(), z)
        return z

    def project(self, z: torch.Tensor, z0: torch.Tensor, ball=None) -> torch.Tensor:
        """The final projection of an attack's result ``z`` for the inputs ``z0`` (unit space):
        immutable features reset, integer and one-hot features repaired, the unit box. When a
        repair leaves a point outside ``ball`` (an ``LpBall`` around ``z0``), that point's
        integer features are truncated toward ``z0`` and its one-hot groups reverted to ``z0``'s,
        which moves no coordinate further from ``z0`` than before, so the point is back inside."""
        z = z.detach().clone()
        if self.immutable:
            idx = list(self.immutable)
            z[:, idx] = z0[:, idx]
        hard = self._hard(z).clamp(0.0, 1.0)
        if ball is None or not (self.integer or self.one_hot):
            return hard
        out = (ball.distance(hard, z0) > ball.eps * (1 + 1e-6) + 1e-7).nonzero().flatten()
        if out.numel():
            hard[out] = self._toward(z[out].clamp(0.0, 1.0), z0[out])
        return hard

    def _toward(self, z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        for g in self.one_hot:
            z[:, list(g)] = z0[:, list(g)]
        if self.integer:
            idx = list(self.integer)
            lo, span = self._lo_span(z)
            raw, raw0 = (lo + span * z)[:, idx], (lo + span * z0)[:, idx].round()
            r = raw0 + torch.trunc(raw - raw0 + 1e-6 * torch.sign(raw - raw0))
            z[:, idx] = torch.where(span[idx] > 0, (r - lo[idx]) / span[idx].clamp_min(1e-30),
                                    0.0)
        return z

    def violations(self, x_raw: np.ndarray, *, source: str) -> None:
        """InputContractError naming the first raw value outside its bounds, a non-integer value
        of an integer feature, or a row of a one-hot group that is not one-hot."""
        x = np.asarray(x_raw, dtype=np.float64)
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        tol = 1e-6 * np.maximum(1.0, np.abs(hi - lo))
        bad = (x < lo - tol) | (x > hi + tol)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise InputContractError(
                f"{source}: row {i}, feature {self.names[j]!r} is {x[i, j]:g}, outside its bounds "
                f"[{self.lo[j]:g}, {self.hi[j]:g}]; widen the bounds in the spec's "
                "dataset.features.bounds or fix the value")
        for j in self.integer:
            frac = np.abs(x[:, j] - np.round(x[:, j])) > 1e-6
            if frac.any():
                i = int(np.argmax(frac))
                raise InputContractError(
                    f"{source}: row {i}, feature {self.names[j]!r} is {x[i, j]:g}, but it is "
                    "declared integer; remove it from dataset.features.integer or fix the data")
        for g in self.one_hot:
            block = x[:, list(g)]
            ok = np.isin(block, (0.0, 1.0)).all(1) & (block.sum(1) == 1)
            if not ok.all():
                i = int(np.argmin(ok))
                raise InputContractError(
                    f"{source}: row {i} is not one-hot over the group "
                    f"{[self.names[j] for j in g]} (values {block[i].tolist()}); a one-hot group "
                    "needs exactly one 1 and 0 elsewhere in every row")

    def as_dict(self) -> dict:
        """The report's record: bounds per feature (in the order of the dataset's
        ``feature_names``) and the constraints by name."""
        n = self.names
        return {
            "eps_unit": EPS_UNIT,
            "bounds": [[self.lo[j], self.hi[j]] for j in range(self.d)],
            "immutable": [n[j] for j in self.immutable],
            "integer": [n[j] for j in self.integer],
            "one_hot": [[n[j] for j in g] for g in self.one_hot],
        }


EPS_UNIT = "fraction of each feature's range (per-feature normalised units)"


# ---------------------------------------------------------------------------------------------
# building a feature space from data and the spec's declarations

PREPROCESSING = ("none", "minmax", "standard")
_FEATURE_KEYS = ("immutable", "integer", "one_hot", "bounds")


def preprocess(x_tr: np.ndarray, x_te: np.ndarray, kind: str, continuous: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Apply the spec's ``preprocessing`` to the continuous features with training statistics:
    ``none`` (the model gets the columns as they are), ``minmax`` (to [0, 1], test values clipped
    to the training range) or ``standard`` (zero mean, unit variance). Returns both splits and the
    record the report shows."""
    if kind not in PREPROCESSING:
        raise InputContractError(f"preprocessing {kind!r} is not one of {', '.join(PREPROCESSING)}")
    x_tr, x_te = x_tr.astype(np.float64).copy(), x_te.astype(np.float64).copy()
    c = np.flatnonzero(continuous)
    record = {"kind": kind, "fit_on": "training split", "features": int(len(c))}
    if kind == "none" or not len(c):
        return x_tr, x_te, {"kind": kind}
    if kind == "minmax":
        lo = x_tr[:, c].min(0)
        span = x_tr[:, c].max(0) - lo
        span = np.where(span > 0, span, 1.0)
        x_tr[:, c] = (x_tr[:, c] - lo) / span
        x_te[:, c] = np.clip((x_te[:, c] - lo) / span, 0.0, 1.0)
        return x_tr, x_te, {**record, "test_values": "clipped to the training range"}
    mean, std = x_tr[:, c].mean(0), x_tr[:, c].std(0)
    std = np.where(std > 0, std, 1.0)
    x_tr[:, c] = (x_tr[:, c] - mean) / std
    x_te[:, c] = (x_te[:, c] - mean) / std
    return x_tr, x_te, record


def _resolve(names: tuple[str, ...], columns: dict[str, tuple[int, ...]], wanted, what: str
             ) -> list[int]:
    """Feature indices for the names in ``wanted``: a feature name, or a table column whose
    levels became one-hot features (all of them)."""
    if not isinstance(wanted, list | tuple) or not all(isinstance(w, str) for w in wanted):
        raise InputContractError(f"dataset.features.{what} must be a list of feature names")
    index = {n: i for i, n in enumerate(names)}
    out: list[int] = []
    for w in wanted:
        if w in index:
            out.append(index[w])
        elif w in columns:
            out.extend(columns[w])
        else:
            shown = ", ".join(list(names)[:20]) + (", ..." if len(names) > 20 else "")
            raise InputContractError(
                f"dataset.features.{what}: no feature named {w!r}; the features are: {shown}")
    return out


def build_space(x_tr: np.ndarray, x_te: np.ndarray, names: tuple[str, ...], *,
                binary: np.ndarray, columns: dict[str, tuple[int, ...]] | None = None,
                integer_auto: tuple[int, ...] = (), declared: dict | None = None,
                source: str) -> FeatureSpace:
    """The FeatureSpace of already preprocessed data: bounds from the data (train and test; [0, 1]
    for binary features) unless ``declared["bounds"]`` names them, one-hot groups for each
    categorical ``column`` plus the declared ones, integer features (``integer_auto``: integer
    columns of a table, plus the declared ones), immutable features. Checks the data against it."""
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(_FEATURE_KEYS))
    if unknown:
        raise InputContractError(f"dataset.features: unknown key(s) {unknown}; use "
                                 f"{', '.join(_FEATURE_KEYS)}")
    columns = columns or {}
    both = np.concatenate([x_tr, x_te]).astype(np.float64)
    lo, hi = both.min(0), both.max(0)
    lo, hi = np.where(binary, np.minimum(lo, 0.0), lo), np.where(binary, np.maximum(hi, 1.0), hi)
    bounds = declared.get("bounds") or {}
    if not isinstance(bounds, dict):
        raise InputContractError("dataset.features.bounds must map feature names to [lo, hi]")
    for name, pair in bounds.items():
        ok = isinstance(pair, list | tuple) and len(pair) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
        if not ok or not pair[0] <= pair[1]:
            raise InputContractError(f"dataset.features.bounds.{name}: expected [lo, hi] with "
                                     f"lo <= hi, got {pair!r}")
        for j in _resolve(names, columns, [name], "bounds"):
            lo[j], hi[j] = float(pair[0]), float(pair[1])
    groups = [tuple(g) for g in columns.values()]
    for g in declared.get("one_hot") or []:
        groups.append(tuple(_resolve(names, columns, g, "one_hot")))
    seen: set[int] = set()
    for g in groups:
        if len(g) < 2 or seen & set(g):
            raise InputContractError(
                f"dataset.features.one_hot: the group {[names[j] for j in g]} needs at least two "
                "features, none of them in another group")
        seen |= set(g)
    integer = set(integer_auto) | set(_resolve(names, columns, declared.get("integer") or [],
                                               "integer"))
    immutable = _resolve(names, columns, declared.get("immutable") or [], "immutable")
    space = FeatureSpace(names, tuple(float(v) for v in lo), tuple(float(v) for v in hi),
                         immutable=tuple(sorted(set(immutable))),
                         integer=tuple(sorted(integer - seen)), one_hot=tuple(groups))
    space.violations(both, source=source)
    return space
