"""Neural Cleanse over several seeds, through the audit: is the target class flagged on every
BadNets model, and is the clean model left alone? (issue 15's ten-seed criterion)

Each seed runs ``--preset backdoor`` as a spec with only the Neural Cleanse mitigation
(``on_clean: true``), so the clean reference model and the BadNets model (10 % poison, target 0)
of that seed are both searched. Per seed it prints whether class 0 was flagged on the backdoored
model and whether anything was flagged on the clean one, with the index margins. Only classes
whose mask norm is below the median can be flagged (a small trigger is the anomaly), so the
margins are over those classes: the target's anomaly index minus the largest other such index
(backdoored), and the threshold 2 minus the largest such index (clean). A positive margin is a
right call.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/nc_seeds.py [--seeds 10] [--out /tmp/nc_seeds]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import yaml

THRESHOLD = 2.0  # Neural Cleanse's anomaly-index threshold (Wang et al. 2019)


def spec_for(seed: int) -> dict:
    text = resources.files("advkit.audit.presets").joinpath("backdoor.yaml").read_text()
    spec = yaml.safe_load(text)
    spec["seed"] = seed
    spec["title"] = f"Neural Cleanse seed {seed}"
    nc = next(m for m in spec["poisoning"]["mitigations"]
              if isinstance(m, dict) and m.get("name") == "neural_cleanse" and "repair" not in m)
    spec["poisoning"]["mitigations"] = [nc]
    return spec


def nc_rows(report: dict) -> tuple[dict, dict]:
    rows = {s["id"]: s for s in report["scenarios"] if s["id"].endswith("mitigation=neural_cleanse")}
    clean = rows["poisoning/clean/mitigation=neural_cleanse"]
    bd = next(v for k, v in rows.items() if k.startswith("poisoning/badnets"))
    return clean, bd


def low_side(rec: dict) -> list[float]:
    """Anomaly index per class, 0 for classes whose mask norm is not below the median."""
    norms = rec["per_sample"]["mask_norms"]
    med = statistics.median(norms)
    return [a if n < med else 0.0 for a, n in zip(rec["per_sample"]["anomaly_index"], norms,
                                                     strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("/tmp/nc_seeds"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ADVKIT_HISTORY": str(args.out / "history.sqlite")}
    table = []
    for seed in range(args.seeds):
        spec_path = args.out / f"seed{seed}.yaml"
        spec_path.write_text(yaml.safe_dump(spec_for(seed), sort_keys=False))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "advkit", "audit", str(spec_path), "--out",
                        str(args.out / f"seed{seed}")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        report = json.loads((args.out / f"seed{seed}" / "report.json").read_text())
        clean, bd = nc_rows(report)
        ai_bd, ai_clean = low_side(bd), low_side(clean)
        row = {"seed": seed, "target_flagged": bd["metrics"]["target_flagged"],
               "backdoored_flagged": bd["metrics"]["n_flagged"],
               "target_index": ai_bd[0], "margin_vs_others": ai_bd[0] - max(ai_bd[1:]),
               "clean_flagged": clean["metrics"]["n_flagged"],
               "clean_margin": THRESHOLD - max(ai_clean),
               "seconds": time.perf_counter() - t0}
        table.append(row)
        print(json.dumps(row), flush=True)
    hits = sum(r["target_flagged"] for r in table)
    quiet = sum(r["clean_flagged"] == 0 for r in table)
    print(f"target flagged on {hits}/{len(table)} backdoored models; "
          f"nothing flagged on {quiet}/{len(table)} clean models")


if __name__ == "__main__":
    main()
