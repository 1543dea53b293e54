"""What an audit runs on: the data, the model behind its target, and the model's identity."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advkit.audit.manifest import sha256_state_dict
from advkit.audit.plan import check_budgets, make_plan
from advkit.data import Dataset
from advkit.paths import check_path
from advkit.targets.base import Target
from advkit.targets.features import FeatureSpaceTarget

if TYPE_CHECKING:
    from advkit.audit.spec import AuditSpec

@dataclass
class AuditSubject:
    """What an audit runs on: the dataset, the target and the model's identity."""

    dataset: Dataset
    target: Target
    model_info: dict
    model_sha256: str

    def test_inputs(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test points and labels, as the target takes them (tabular data: in
        per-feature unit space), checked against its contract."""
        t, ds = self.target, self.dataset
        x = ds.x_test[:n]
        x = t.to_unit(x) if isinstance(t, FeatureSpaceTarget) else t.check_inputs(x)
        return x, t.check_labels(ds.y_test[:n], x.shape[0])


def load_subject(spec: AuditSpec, *, progress: bool | None = None) -> AuditSubject:
    from advkit.data import load
    from advkit.models.cache import trained_zoo_model
    from advkit.models.io import load_model, target_for

    d = spec.dataset
    ds = load(d.name or d.path, label_column=d.label_column, preprocessing=d.preprocessing,
              features=d.features.model_dump() if d.features is not None else None)
    if d.n_train is not None:
        from advkit.data import subset_train
        from advkit.errors import AuditSpecError

        if d.n_train > ds.x_train.shape[0]:
            raise AuditSpecError(f"dataset.n_train: {d.n_train} is more than the "
                                 f"{ds.x_train.shape[0]} training samples of {ds.info.name!r}; "
                                 "lower it or remove it (all of them are used by default)")
        ds = subset_train(ds, d.n_train, seed=spec.seed)
    space = ds.info.feature_space  # tabular: attacks work in per-feature unit space
    check_budgets(make_plan(spec), ds.info if space is None else
                  dataclasses.replace(ds.info, bounds=(0.0, 1.0)))  # before any training
    if spec.model.path is not None:
        check_path(spec.model.path, "model.path")
    if spec.model.url is not None:
        target, info, sha = api_target(spec, ds)
    elif spec.model.zoo is not None:
        model, info = trained_zoo_model(ds, spec.model, seed=spec.seed, progress=progress)
        sha = sha256_state_dict(model.state_dict())
    else:
        if spec.model.class_ is not None:  # the user's own code, imported from the spec's folder
            from advkit.models.user_class import load_user_model

            loaded = load_user_model(spec.model.class_, spec.model.kwargs, spec.model.weights,
                                     code_dir=spec.model.spec_dir)
        else:
            loaded = load_model(spec.model.path, trust_pickle=spec.model.trust_pickle,
                                allow_dangerous=spec.model.allow_dangerous,
                                search_paths=[d for d in [spec.model.spec_dir] if d])
        model, sha = loaded.model, loaded.sha256
        name = spec.model.class_.rpartition(":")[2] if spec.model.class_ else None
        info = {
            "name": name or Path(spec.model.path).name,
            "source": str(spec.model.weights or spec.model.path),
            "kind": loaded.kind,
            **loaded.config,
        }
    if spec.model.url is None:
        target = target_for(model, ds, batch_size=spec.evaluation.batch_size)
    if space is not None:
        target = FeatureSpaceTarget(target)
    return AuditSubject(ds, target, info, sha)


def api_target(spec: AuditSpec, ds: Dataset):
    """The HttpTarget of a ``model: {url: ...}`` spec, its report info and its identity (a hash
    of the URL and what it answers: the store keeps results per API)."""
    import hashlib
    import json

    from advkit.errors import AuditSpecError
    from advkit.targets.http import HttpTarget, public_url

    m, contract = spec.model, ds.contract()
    if m.input_shape is not None and tuple(m.input_shape) != contract.shape:
        raise AuditSpecError(f"model.input_shape {m.input_shape} is not the dataset's input shape "
                             f"{list(contract.shape)}; fix: audit the API with the data it takes")
    if m.n_classes is not None and m.n_classes != contract.n_classes:
        raise AuditSpecError(f"model.n_classes {m.n_classes} is not the dataset's "
                             f"{contract.n_classes} classes; fix: audit the API with its own data")
    fields = ("url", "output", "inputs_field", "output_field", "extra_body", "max_batch",
              "api_key_env", "api_key_file", "api_key_header", "api_key_prefix", "timeout_s",
              "retries", "backoff_s", "max_wait_s", "rate_limit", "concurrency", "query_log",
              "offline", "budget", "price_per_query")
    target = HttpTarget(contract=contract, batch_size=spec.evaluation.batch_size, seed=spec.seed,
                        **{f: getattr(m, f) for f in fields})
    target.announce_cost()
    info = {"name": public_url(m.url), "source": public_url(m.url), "kind": "http api",
            **target.describe()}
    ident = {"url": public_url(m.url), "output": m.output, "shape": list(contract.shape),
             "n_classes": contract.n_classes}
    return target, info, hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def query_accounting(target: Target) -> dict | None:
    """The exact query accounting of the API behind ``target`` (through any wrappers), or None
    for an in-process model."""
    while isinstance(target, Target):
        if callable(getattr(target, "accounting", None)):
            return target.accounting()
        target = getattr(target, "inner", None)
    return None
