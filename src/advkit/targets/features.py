"""``FeatureSpaceTarget``: a tabular target attacked in per-feature unit space.

The wrapped target takes raw features with per-feature bounds (its contract's ``features``, an
:class:`advkit.data.features.FeatureSpace`). This target takes unit-space points ``z`` in
``[0, 1]^d`` and gives the model ``lo + (hi - lo) * repair(z)``: every attack's clip to the
contract bounds after each step is then the per-feature bounds, and eps is a fraction of each
feature's range. ``repair`` rounds integer features and sets one-hot groups with a
straight-through gradient and gives immutable features no gradient; the attack template
(``EvasionAttack.attack``) applies the final projection (``FeatureSpace.project``).
"""

from __future__ import annotations

import torch

from advkit.errors import InvalidParameterError
from advkit.targets.base import Capabilities, InputContract, Target


class FeatureSpaceTarget(Target):
    """``inner`` (raw tabular features) seen in the unit space of its feature bounds."""

    def __init__(self, inner: Target, *, batch_size: int | None = None,
                 budget: int | None = None):
        if not isinstance(inner, Target):
            raise InvalidParameterError("inner", type(inner).__name__, "an advkit Target")
        fs = inner.contract.features
        if fs is None:
            raise InvalidParameterError("inner", type(inner).__name__,
                                        "a target whose contract declares per-feature bounds")
        c = inner.contract
        # float64: the raw features rebuilt from unit space round to the very float32 values the
        # model was given before (so clean predictions equal the model's own, to the bit)
        contract = InputContract(shape=c.shape, n_classes=c.n_classes, bounds=(0.0, 1.0),
                                 dtype=torch.float64, normalization=c.normalization,
                                 class_names=c.class_names)
        super().__init__(contract=contract,
                         batch_size=inner.batch_size if batch_size is None else batch_size,
                         budget=budget)
        self.inner = inner
        self.space = fs

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def feature_space(self):
        return self.space

    def to_unit(self, x_raw: torch.Tensor) -> torch.Tensor:
        """Raw features (checked against the inner contract) as unit-space points (float64)."""
        return self.space.to_unit(self.inner.check_inputs(x_raw).to(torch.float64))

    def to_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unit-space points as the raw features the model is given (constraints repaired)."""
        with torch.no_grad():
            return self._raw(z)

    def _raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.space.from_unit(self.space.repair(z.to(torch.float64))).to(
            self.inner.contract.dtype)

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.predict_scores(self._raw(z), check=False)
