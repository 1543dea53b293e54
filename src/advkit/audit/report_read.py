"""``Report.from_dict``: a report JSON document (``Report.to_dict`` / ``report.json``) back into the
typed Report, so a stored report can be rendered again, compared or served without re-running
anything. Proportions (``{value, k, n, ci_low, ci_high, confidence}``) become ``Proportion``s
wherever they appear; image pixels become arrays."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from advkit.errors import ReportFormatError
from advkit.evaluation.metrics import Proportion
from advkit.threat_tags import ThreatTag

_PROPORTION = {"value", "k", "n", "ci_low", "ci_high", "confidence"}


def values(obj: Any) -> Any:
    """``obj`` with every proportion dict (recursively) as a Proportion."""
    if isinstance(obj, dict):
        if set(obj) == _PROPORTION:
            return Proportion(k=int(obj["k"]), n=int(obj["n"]), lo=float(obj["ci_low"]),
                              hi=float(obj["ci_high"]), confidence=float(obj["confidence"]))
        return {k: values(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [values(v) for v in obj]
    return obj


def report_from_dict(doc: dict[str, Any]):
    """The Report a ``to_dict`` document describes; ReportFormatError naming what is wrong."""
    from advkit.audit.report import (
        Finding,
        Image,
        Plot,
        Report,
        ScenarioResult,
        Section,
        Series,
        Table,
        Verdict,
    )

    def section(d):
        return Section(
            title=d["title"], text=d.get("text", ""),
            tables=[Table(columns=t["columns"], rows=values(t["rows"]), title=t.get("title", ""),
                          collapsed=bool(t.get("collapsed", False)))
                    for t in d.get("tables", [])],
            plots=[Plot(**{**p, "series": [Series(**s) for s in p["series"]],
                           "ylim": tuple(p["ylim"]) if p.get("ylim") is not None else None})
                   for p in d.get("plots", [])],
            images=[Image(caption=i["caption"], pixels=np.asarray(i["pixels"], dtype=np.float32),
                          group=i.get("group", "")) for i in d.get("images", [])],
            image_columns=d.get("image_columns", 8))

    def finding(d):
        tag = d.get("threat_tag")
        return Finding(**{**d, "threat_tag": ThreatTag.from_dict(tag) if tag else None})

    try:
        return Report(
            manifest=doc["manifest"], model=doc["model"], dataset=doc["dataset"],
            scenarios=[ScenarioResult(**{**s, "metrics": values(s["metrics"])})
                       for s in doc.get("scenarios", [])],
            findings=[finding(f) for f in doc.get("findings", [])],
            sections=[section(s) for s in doc.get("sections", [])],
            title=doc.get("title", "advkit audit"),
            schema_version=doc.get("schema_version", ""),
            verdicts=[Verdict(**{**v, "figures": values(v.get("figures", []))})
                      for v in doc.get("verdicts", [])])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportFormatError(f"the report document does not describe an advkit report "
                                f"({type(exc).__name__}: {exc}); pass a report.json written by "
                                "advkit") from None


# What differs between two runs of one audit and says nothing about the model: wall-clock times,
# the command line, run ids, where the work ran (the executor's section: its tasks' nodes,
# processes and log files) and whether a result was read back (from the progress store or the
# model cache) rather than computed in this run, and the cache's folder. Every other key of a
# report must be equal between two runs of one spec, whichever executor ran them.
RUN_VOLATILE = frozenset({
    "seconds", "started", "finished", "duration_s", "durations", "train_seconds",  # times
    "seconds_per_point", "times_undefended", "undefended_seconds", "defended_seconds",
    "steal_seconds", "seconds_train_or_load", "search_seconds",
    "command", "run_id", "executor",  # the run's identity and where it ran (hosts, pids, logs)
    "from_store", "scenarios_run", "scenarios_from_store",  # read back from the store
    "trained_now", "cache", "model_cache", "model_from_cache", "retrained_model_cache",
    "retrained_from_cache",  # read back from the model cache, and its folder
})


def without_keys(obj: Any, keys) -> Any:
    """``obj`` (a report document) without the ``keys``, at any depth."""
    if isinstance(obj, dict):
        return {k: without_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [without_keys(v, keys) for v in obj]
    return obj


# The same for the sections' tables: a column of wall-clock times (by its header: "seconds",
# "inference s/point", "× undefended time", "training s", "defense time (s)", ...).
TIME_COLUMN = re.compile(r"\btime\b|\bseconds?\b|\bs/point\b|\btraining s\b|\(s\)")


def run_independent(doc: dict) -> dict:
    """A report document (``report.json``) without ``RUN_VOLATILE`` and with the cells of its
    tables' time columns blanked: what any run of the same audit, local or on Ray, must equal."""
    out = without_keys(doc, RUN_VOLATILE)
    for section in out.get("sections", []) if isinstance(out, dict) else []:
        for table in section.get("tables", []) if isinstance(section, dict) else []:
            cols = [i for i, c in enumerate(table.get("columns") or [])
                    if isinstance(c, str) and TIME_COLUMN.search(c.lower())]
            for row in table.get("rows") or []:
                for i in cols:
                    if isinstance(row, list) and i < len(row):
                        row[i] = None
    return out
