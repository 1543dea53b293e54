"""Neural Cleanse run as one stage per class plus a merge stage (issue 17, Deliver 5): a class
searched alone finds the trigger the all-class search finds for it (each class draws from its own
generator), the audit stores one record per class and merges them into the record the report
reads, and a resumed audit runs only the class stages missing from the store."""

from __future__ import annotations

import json
import random
import sqlite3
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advkit.audit import runner
from advkit.audit.executors import get_executor
from advkit.audit.spec import parse_spec
from advkit.defenses.detectors.neural_cleanse import NeuralCleanse
from advkit.errors import AdvkitWarning, InvalidParameterError
from advkit.report.json import report_dict
from report_keys import run_independent

KW = dict(epochs=4, steps_per_epoch=3, batch_size=8, patience=1, eval_images=40)
NC = "backdoor/neural-cleanse"
SPEC = {
    "title": "neural cleanse per class",
    "seed": 5,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 2, "kwargs": {"hidden": [32]}},
    "evaluation": {"n_samples": 100},
    "backdoor": {"neural_cleanse": {"epochs": 3, "steps_per_epoch": 2, "batch_size": 8},
                 "clean_samples": 200},
}


def _toy():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.rand((80, 1, 4, 4), generator=g)
    return model.eval(), x, torch.arange(80) % 4


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvkitWarning)
        return fn(*a, **kw)


def test_a_class_searched_alone_gets_the_trigger_the_whole_search_gets():
    model, x, y = _toy()
    whole = _quiet(NeuralCleanse(**KW).fit, model, x, y, generator=torch.Generator().manual_seed(7))
    parts = [_quiet(NeuralCleanse(**KW).search_class, model, x, y, k,
                    generator=torch.Generator().manual_seed(7)) for k in range(4)]
    random.Random(0).shuffle(parts)  # the order the stages finished in does not matter
    merged = _quiet(NeuralCleanse(**KW).from_classes, parts)
    assert torch.equal(merged.masks_, whole.masks_)
    assert torch.equal(merged.patterns_, whole.patterns_)
    for name in ("mask_norms_", "anomaly_index_", "flagged_", "success_", "reached_", "epochs_",
                 "resets_", "failed_", "final_success_"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    # the rows add up: each class searched alone forwards its own batches only
    assert merged.rows_ == whole.rows_ and merged.steps_ == sum(p.steps for p in parts)
    # a different seed is a different search
    other = _quiet(NeuralCleanse(**KW).search_class, model, x, y, 0,
                   generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other.masks[0], whole.masks_[0])


def test_merging_needs_every_class_once():
    model, x, y = _toy()
    one = _quiet(NeuralCleanse(**KW).search_class, model, x, y, 1)
    with pytest.raises(InvalidParameterError, match="one search of each class"):
        NeuralCleanse(**KW).from_classes([one])
    with pytest.raises(InvalidParameterError, match="cls"):
        NeuralCleanse(**KW).search_class(model, x, y, 4)


def _run(out, executor="local") -> dict:
    spec = parse_spec(SPEC)
    rep = runner.run_audit(spec, out_dir=out, spec_sha256=spec.sha256(), progress=False,
                           executor=get_executor(executor))
    return json.loads(json.dumps(report_dict(rep)))


def _stored(out) -> dict[str, dict]:
    with sqlite3.connect(out / ".advkit-progress.sqlite") as db:
        return {sid: json.loads(r) for sid, r in
                db.execute("SELECT scenario_id, result FROM scenarios")}


def test_one_stage_per_class_merged_stored_and_resumed(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")
    out = tmp_path / "out"
    doc = _run(out)
    classes = [f"{NC}/class={k}" for k in range(10)]
    tasks = doc["manifest"]["executor"]["tasks"]
    assert set(classes) <= set(tasks)
    assert tasks[NC]["deps"] == classes  # the merge waits for every class
    # the report reads the merged record; the class records are in the store
    ids = [s["id"] for s in doc["scenarios"]]
    assert NC in ids and not any("class=" in i for i in ids)
    stored = _stored(out)
    nc = next(s for s in doc["scenarios"] if s["id"] == NC)
    assert nc["per_sample"]["mask_norm"] == [stored[c]["norm"] for c in classes]
    assert stored[NC]["masks"] == [stored[c]["mask"] for c in classes]
    # resumed: nothing runs again, the report is the same
    again = _run(out)
    assert again["manifest"]["executor"]["tasks"] == {}
    assert run_independent(again) == run_independent(doc)
    # one class's record lost: only that class runs again, with the same result
    with sqlite3.connect(out / ".advkit-progress.sqlite") as db:
        db.execute("DELETE FROM scenarios WHERE scenario_id = ?", (classes[3],))
    third = _run(out)
    assert set(third["manifest"]["executor"]["tasks"]) == {classes[3]}
    assert _stored(out)[classes[3]]["mask"] == stored[classes[3]]["mask"]
    assert run_independent(third) == run_independent(doc)
