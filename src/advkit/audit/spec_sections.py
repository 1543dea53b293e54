"""The data, model and verdict sections of the audit spec (``advkit.audit.spec`` holds the
whole spec, its parsing and its checks); each a strict pydantic model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class _Strict(BaseModel):
    # strict: YAML types are kept (no "10" -> 10, 2.0 -> 2, true -> 1); floats must be finite
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FeaturesSpec(_Strict):
    """Tabular feature bounds and constraints, by feature name (a table's categorical column
    name stands for all its one-hot features); see ``advkit.data.features``."""

    immutable: list[str] = Field(default_factory=list)
    integer: list[str] = Field(default_factory=list)
    one_hot: list[list[str]] = Field(default_factory=list)
    bounds: dict[str, list[float]] = Field(default_factory=dict)


class DatasetSpec(_Strict):
    name: str | None = None
    path: str | None = None
    label_column: str | None = None
    # tabular data: none (the default for user files: the model gets the columns as they are),
    # minmax or standard (training statistics), applied before the model; recorded in the report
    preprocessing: str | None = None
    features: FeaturesSpec | None = None
    # train on a random subset of this many training samples (drawn from the spec's seed)
    n_train: int | None = Field(default=None, ge=1)

    @field_validator("preprocessing")
    @classmethod
    def _preprocessing(cls, v):
        from advkit.data.features import PREPROCESSING

        if v is not None and v not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING)}")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.path is None):
            raise ValueError(
                "give exactly one of 'name' (a built-in dataset) or 'path' (a user file)"
            )
        return self


def _recipe_choice(name: str, v: str | None) -> str | None:
    """``lr_schedule`` / ``optimizer`` of a recipe: one the shared trainer knows, or None."""
    from advkit.models.train import LR_SCHEDULES, OPTIMIZERS

    allowed = {"lr_schedule": LR_SCHEDULES, "optimizer": OPTIMIZERS}[name]
    if v is not None and v not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}")
    return v


class RecipeOverrides(_Strict):
    """Training settings a family may set over the model section's recipe (None: keep it)."""

    epochs: int | None = Field(default=None, ge=1, le=1000)
    lr: float | None = Field(default=None, gt=0, le=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr_schedule: str | None = None
    optimizer: str | None = None
    weight_decay: float | None = Field(default=None, ge=0)
    lr_milestones: list[int] | None = None  # lr_schedule step: epochs after which lr x 0.1

    @field_validator("lr_schedule", "optimizer")
    @classmethod
    def _choice(cls, v, info):
        return _recipe_choice(info.field_name, v)


class ModelSpec(_Strict):
    zoo: str | None = None
    path: str | None = None
    class_: str | None = Field(default=None, alias="class")  # "pkg.module:Class", the user's code
    weights: str | None = None  # with class: a safetensors file of that class's state dict
    trust_pickle: bool = False
    allow_dangerous: bool = False  # only with trust_pickle: also load a file the scan calls dangerous
    epochs: int = Field(default=30, ge=1, le=1000)
    lr: float = Field(default=1e-3, gt=0, le=1)
    batch_size: int = Field(default=64, ge=1)
    # the rest of a recipe (advkit.models.cache.Recipe); None: the trainer's defaults
    lr_schedule: str | None = None  # constant | cyclic | step
    optimizer: str | None = None  # adam | sgd
    weight_decay: float | None = Field(default=None, ge=0)
    lr_milestones: list[int] | None = None  # lr_schedule step: epochs after which lr x 0.1
    kwargs: dict[str, Any] = Field(default_factory=dict)

    _spec_dir: str | None = PrivateAttr(default=None)  # set by load_spec: the spec's folder

    @field_validator("lr_schedule", "optimizer")
    @classmethod
    def _choice(cls, v, info):
        return _recipe_choice(info.field_name, v)

    @property
    def spec_dir(self) -> Path | None:
        """The spec file's folder (None if not read from a file): ``class`` is imported from it."""
        return None if self._spec_dir is None else Path(self._spec_dir)

    @model_validator(mode="after")
    def _one_source(self):
        from advkit.models.user_class import source_problem

        if problem := source_problem(self.zoo, self.path, self.class_, self.weights):
            raise ValueError(problem)
        if self.allow_dangerous and not self.trust_pickle:
            raise ValueError(
                "allow_dangerous: true only works together with trust_pickle: true (it lets a "
                "trusted file load even though its scan found dangerous imports)"
            )
        if self.zoo is not None and (self.lr_schedule == "step" or self.lr_milestones):
            from advkit.errors import AdvkitError
            from advkit.models.cache import Recipe

            try:  # milestones against epochs, now rather than at training time
                Recipe.from_spec(self)
            except AdvkitError as exc:
                raise ValueError(str(exc)) from None
        return self


class EvasionVerdictSpec(_Strict):
    """The evasion verdict's rule (``advkit.audit.verdicts``): vulnerable when the worst-case
    robust accuracy at the judged budget of some norm is below
    ``max(min_ratio_to_clean * clean accuracy, min_robust_accuracy)``."""

    min_ratio_to_clean: float = Field(default=0.5, ge=0, le=1)
    min_robust_accuracy: float = Field(default=0.0, ge=0, le=1)
    bound: str = "value"  # value | lower | upper: judge the estimate or a 95 % interval bound
    budgets: dict[str, float] = Field(default_factory=dict)  # norm -> eps judged (default: largest)

    @field_validator("bound")
    @classmethod
    def _bound(cls, v):
        if v not in ("value", "lower", "upper"):
            raise ValueError("bound must be 'value' (the estimate), 'lower' or 'upper' (the 95 % "
                             "Wilson interval's bounds)")
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v):
        from advkit.audit.plan import norm_label
        from advkit.errors import InvalidParameterError

        out = {}
        for norm, eps in v.items():
            try:
                label = norm_label(norm)
            except InvalidParameterError:
                raise ValueError(f"unknown norm {norm!r} (use inf, l2 or l1)") from None
            if not eps > 0:
                raise ValueError(f"the budget for {label} must be > 0, got {eps}")
            out[label] = float(eps)
        return out


class VerdictsSpec(_Strict):
    evasion: EvasionVerdictSpec = Field(default_factory=EvasionVerdictSpec)


