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
    if spec.model.zoo is not None:
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
    target = target_for(model, ds, batch_size=spec.evaluation.batch_size)
    if space is not None:
        target = FeatureSpaceTarget(target)
    return AuditSubject(ds, target, info, sha)


