"""The data, model and verdict sections of the audit spec (``advkit.audit.spec`` holds the
whole spec, its parsing and its checks); each a strict pydantic model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class _Strict(BaseModel):
    # strict: YAML types are kept (no "10" -> 10, 2.0 -> 2, true -> 1); floats must be finite
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Entry(_Strict):
    """One entry of a section's list: a registered ``name``, its ``params`` and an optional
    ``label`` that names its stages instead of the name (two entries of one name need one)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, min_length=1, max_length=60,
                              pattern=r"^[A-Za-z0-9_.-]+$")

    @property
    def key(self) -> str:
        return self.label or self.name


def check_entries(entries: list, *, source: str, field: str, noun: str, known, check) -> None:
    """Each entry of a spec list (``source.field``): a ``name`` among ``known`` (else an
    AuditSpecError listing the ``noun``s), and ``check(entry)`` raising no AdvkitError (else an
    AuditSpecError naming the entry)."""
    from advkit.errors import AdvkitError, AuditSpecError, short

    for i, e in enumerate(entries):
        if e.name not in known:
            raise AuditSpecError(f"{source}.{field}[{i}].name: unknown {noun} {short(e.name)}; "
                                 f"{noun}s: {', '.join(known)}")
        try:
            check(e)
        except AdvkitError as exc:
            raise AuditSpecError(f"{source}.{field}[{i}] ({e.key}): {exc}") from None


def require_distinct(keys: list[str], what: str) -> None:
    """ValueError (for a pydantic validator) when two entries of a section list share a key:
    the key names their stages."""
    if len(set(keys)) != len(keys):
        raise ValueError(f"two {what} share a name: give each a distinct 'label' (it names "
                         "their stages)")


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
    # DP-SGD (advkit.defenses.training.dp.DPSGD, needs advkit[privacy]): noise_multiplier,
    # max_grad_norm, delta, accountant; the accountant's epsilon is reported with the model
    dp: dict[str, Any] | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # a model behind a prediction API (advkit.targets.http.HttpTarget): no weights, black box
    url: str | None = None
    input_shape: list[int] | None = None  # checked against the dataset's
    n_classes: int | None = Field(default=None, ge=2)
    output: str = "probabilities"  # or labels: what the API answers
    inputs_field: str = "inputs"
    output_field: str | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)
    max_batch: int = Field(default=64, ge=1)
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key_header: str = "Authorization"
    api_key_prefix: str = "Bearer "
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=6, ge=0, le=100)
    backoff_s: float = Field(default=0.1, ge=0)
    max_wait_s: float = Field(default=30.0, ge=0)
    rate_limit: float | None = Field(default=None, gt=0)
    concurrency: int = Field(default=1, ge=1, le=64)
    query_log: str | None = None
    offline: bool = False
    budget: int | None = Field(default=None, ge=1)
    price_per_query: float | None = Field(default=None, ge=0)

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

        if self.url is not None:
            if any(v is not None for v in (self.zoo, self.path, self.class_, self.weights)):
                raise ValueError("a url model is queried through its API: give no zoo, path, "
                                 "class or weights with url")
            if self.output not in ("probabilities", "labels"):
                raise ValueError("output must be 'probabilities' or 'labels' (what the API "
                                 "answers)")
            if self.api_key_env is not None and self.api_key_file is not None:
                raise ValueError("give either api_key_env or api_key_file, not both")
            return self
        api = sorted(f for f in API_FIELDS if getattr(self, f)
                     != ModelSpec.model_fields[f].get_default(call_default_factory=True))
        if api:
            raise ValueError(f"{', '.join(api)} only apply to a model behind an API: add url "
                             "(e.g. url: http://127.0.0.1:8000/predict) or remove them")
        if problem := source_problem(self.zoo, self.path, self.class_, self.weights):
            raise ValueError(problem)
        if self.allow_dangerous and not self.trust_pickle:
            raise ValueError(
                "allow_dangerous: true only works together with trust_pickle: true (it lets a "
                "trusted file load even though its scan found dangerous imports)"
            )
        if self.dp is not None and self.zoo is None:
            raise ValueError("dp trains the model with DP-SGD, so the model must be a recipe "
                             "(model: {zoo: NAME, epochs: N, dp: {...}}); remove dp for a "
                             "model advkit loads")
        if self.zoo is not None and (self.lr_schedule == "step" or self.lr_milestones
                                     or self.dp is not None):
            from advkit.errors import AdvkitError
            from advkit.models.cache import Recipe

            try:  # milestones against epochs, dp settings, now rather than at training time
                Recipe.from_spec(self)
            except AdvkitError as exc:
                raise ValueError(str(exc)) from None
        return self


API_FIELDS = ("input_shape", "n_classes", "output", "inputs_field", "output_field", "extra_body",
              "max_batch", "api_key_env", "api_key_file", "api_key_header", "api_key_prefix",
              "timeout_s", "retries", "backoff_s", "max_wait_s", "rate_limit", "concurrency",
              "query_log", "offline", "budget", "price_per_query")


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


