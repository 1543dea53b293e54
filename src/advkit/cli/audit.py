"""``advkit audit [SPEC]``: run the default audit, a YAML spec, or a preset; write the report."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from advkit.cli.history import history_option
from advkit.cli.history import record as record_history
from advkit.cli.output import echo, log_stages
from advkit.errors import AuditSpecError, check_seed
from advkit.paths import prepare_out_dir


def _thresholds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not math.isfinite(out.get(key.strip(), 0.0)):
            raise AuditSpecError(
                f"--fail-under {item!r}: expected METRIC[@EPS[/NORM]][:BOUND]=VALUE, e.g. "
                "clean_accuracy=0.9, robust_accuracy@0.1:lower=0.5 or attack_success_rate@0.1=0.3"
            )
    from advkit.audit.gate import parse_thresholds

    parse_thresholds(out, source="--fail-under")  # unknown metric or bad key: exit 2 now
    return out


def _executor(spec_executor, name: str | None, address: str | None):
    """The spec's executor section with --executor / --address applied, validated as the spec's
    own (an unknown name or an address without ray is an AuditSpecError, exit 2)."""
    from advkit.audit.executors import EXECUTORS
    from advkit.audit.spec import ExecutorSpec

    name = spec_executor.name if name is None else name
    if name not in EXECUTORS:
        raise AuditSpecError(f"--executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise AuditSpecError(f"--address {address!r} applies to the ray executor only; add "
                             "--executor ray or drop --address")
    changes = {"name": name} if address is None else {"name": name, "address": address}
    if name != "ray":
        changes.update(address=None, num_cpus=None)
    from pydantic import ValidationError

    try:
        return ExecutorSpec.model_validate({**spec_executor.model_dump(), **changes})
    except ValidationError as exc:
        why = "; ".join(e["msg"] for e in exc.errors())
        raise AuditSpecError(f"--executor/--address: {why}") from None


def _warn_dangerous(model) -> None:
    """allow_dangerous needs trust_pickle (as load_model's rule); when set, say so loudly."""
    if not model.allow_dangerous:
        return
    if not model.trust_pickle:
        raise AuditSpecError(
            "--allow-dangerous (allow_dangerous: true) only works together with --trust-pickle "
            "(trust_pickle: true): it lets a file you trust load even though its scan found "
            "dangerous imports; add --trust-pickle only if you made the file yourself"
        )
    if model.path is not None:
        echo(
            f"WARNING: --allow-dangerous: {model.path} will be loaded even if its scan finds "
            "imports or code that run commands, touch files or the network, or evaluate code. "
            "Use this only for a file you made yourself, ideally in a sandbox; run "
            f"`advkit scan {model.path}` first to see what it does.",
            err=True,
        )


def audit(
    spec: Path = typer.Argument(None, help="YAML audit spec; omit for the built-in default audit."),
    out: Path = typer.Option(
        Path("advkit-report"), "--out", "-o", help="Folder for report.html/json."
    ),
    preset: str = typer.Option(
        None, "--preset", help="A built-in audit by name; --preset list shows each."),
    fail_under: list[str] = typer.Option(
        [], "--fail-under",
        help="METRIC[@EPS[/NORM]][:BOUND]=VALUE, e.g. robust_accuracy@0.1:lower=0.5 (at least) "
        "or attack_success_rate@0.1=0.3 (at most); exit 1 when missed.",
    ),
    junit: Path = typer.Option(
        None, "--junit", help="Also write JUnit XML here: one test case per threshold and finding."
    ),
    seed: int = typer.Option(None, "--seed", help="Override the spec's seed."),
    fresh: bool = typer.Option(
        False, "--fresh", help="Ignore finished scenarios saved by an earlier run."
    ),
    quick: bool = typer.Option(False, "--quick", help="Presets only: a small, fast version."),
    model: Path = typer.Option(
        None, "--model", help="Audit this model file or folder instead of the spec's model (an "
        ".onnx file, a save_model folder, a skops file, ...), with the spec's data and attacks."),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Load a pickle-based model file (runs its code: only for files you trust).",
    ),
    allow_dangerous: bool = typer.Option(
        False,
        "--allow-dangerous",
        help="With --trust-pickle only: also load a model file whose scan found dangerous "
        "imports or code (never needed for a model you saved yourself with advkit).",
    ),
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."
    ),
    executor: str = typer.Option(
        None, "--executor", help="How the stages run: local (here, one by one) or ray (Ray "
        "tasks); default: the spec's executor, else local."),
    address: str = typer.Option(
        None, "--address", help="With --executor ray: an existing Ray cluster (auto, "
        "ray://HEAD:10001); default: a local Ray instance sized to this machine."),
    history: Path = history_option(),
) -> int:
    """Attack a model, measure the damage, write report.html and report.json, print a summary."""
    log_stages(progress)
    thresholds = _thresholds(fail_under)
    if seed is not None:
        check_seed("--seed", seed)
    if junit is not None and junit.is_dir():
        raise AuditSpecError(f"--junit {str(junit)!r} is a folder; pass a file path, e.g. "
                             "junit.xml")
    from advkit.audit import presets

    if preset == "list":
        for name in presets.names():
            echo(f"{name:18s} {presets.describe(name)}")
        return 0
    if preset is not None:
        if spec is not None:
            raise AuditSpecError("give either a spec file or --preset, not both")
        members = presets.suite(preset, quick=quick)
        if members is not None:
            refused = [flag for flag, v in (("--model", model), ("--junit", junit),
                                            ("--fail-under", fail_under)) if v]
            if refused:
                raise AuditSpecError(
                    f"{', '.join(refused)} cannot apply to the suite preset {preset!r}, whose "
                    f"audits ({', '.join(members)}) differ in data; run a member with "
                    f"--preset {members[0]} {refused[0]} ...")
            return _run_suite(preset, members, out, quick=quick, seed=seed, fresh=fresh,
                              progress=progress, executor=executor, address=address,
                              history=history, trust_pickle=trust_pickle,
                              allow_dangerous=allow_dangerous)
        spec = presets.preset_path(preset, quick=quick)  # a spec file: the generic runner below
    elif quick:
        raise AuditSpecError("--quick applies to presets only; pass --preset NAME --quick")
    return _run_spec(spec, out, thresholds=thresholds, junit=junit, seed=seed, fresh=fresh,
                     model=model, trust_pickle=trust_pickle, allow_dangerous=allow_dangerous,
                     progress=progress, executor=executor, address=address, history=history,
                     preset=preset)


def _run_spec(spec: Path | None, out: Path, *, thresholds: dict, junit: Path | None,
              seed: int | None, fresh: bool, model: Path | None, trust_pickle: bool,
              allow_dangerous: bool, progress: bool | None, executor: str | None,
              address: str | None, history: Path | None, preset: str | None) -> int:
    """Run one audit (the default one, a spec file or a preset's), write its report, print its
    summary; 1 when a threshold is missed, else 0."""
    from advkit.audit.gate import evaluate_thresholds
    from advkit.audit.runner import run_audit
    from advkit.audit.spec import default_spec, load_spec
    from advkit.report import render_markdown, write_report
    from advkit.report.junit import write_junit

    if spec is None:
        s = default_spec()
        sha = s.sha256()
    else:
        s, sha = load_spec(spec)
    if seed is not None:
        s = s.model_copy(update={"seed": seed})
    if model is not None:
        from advkit.audit.spec_sections import ModelSpec

        s = s.model_copy(update={"model": ModelSpec(path=str(model))})
        sha = s.sha256()
    if trust_pickle:
        s = s.model_copy(update={"model": s.model.model_copy(update={"trust_pickle": True})})
    if allow_dangerous:
        s = s.model_copy(update={"model": s.model.model_copy(update={"allow_dangerous": True})})
    _warn_dangerous(s.model)
    if executor is not None or address is not None:
        s = s.model_copy(update={"executor": _executor(s.executor, executor, address)})
    thresholds = {**s.fail_under, **thresholds}
    s = s.model_copy(update={"fail_under": thresholds})
    from advkit.audit.spec import check_gates

    check_gates(s, source="--fail-under/spec")  # before any work: a budget not in the plan
    prepare_out_dir(out)  # before any work: an unusable --out fails now
    report = run_audit(s, out_dir=out, spec_sha256=sha, progress=progress, resume=not fresh)
    try:
        gate = evaluate_thresholds(report, thresholds)
    except AuditSpecError:  # a report that cannot answer a threshold: write it, then exit 2
        write_report(report, out)
        if junit is not None:
            write_junit(report, junit)
        raise
    report.findings.extend(gate)
    paths = write_report(report, out)  # always written before the gate decides
    if junit is not None:
        write_junit(report, junit)
    echo(render_markdown(report))
    echo(f"\nreport: {paths['html']}\njson:   {paths['json']}"
         + (f"\njunit:  {junit}" if junit is not None else ""))
    record_history(report, paths["json"], history, spec=spec, preset=preset)  # never fails it
    missed = [f for f in gate if not f.passed]
    if missed:
        for f in missed:
            echo(f"FAIL: {f.metric}: {f.why} (measured {f.value if f.value is None else round(f.value, 4)})",
                 err=True)
        return 1
    return 0


def _run_suite(name: str, members: list[str], out: Path, *, quick: bool, **options) -> int:
    """Run each member preset of a suite into ``OUT/MEMBER/``, then write ``OUT/index.html``
    linking the reports; the worst exit status of the members."""
    from advkit.audit import presets
    from advkit.report.suite import write_index

    prepare_out_dir(out)
    status, done = 0, []
    for i, member in enumerate(members, 1):
        echo(f"== suite {name}: audit {i}/{len(members)}: {member} ==")
        sub = out / member
        status = max(status, _run_spec(presets.preset_path(member, quick=quick), sub,
                                       thresholds={}, junit=None, model=None, preset=member,
                                       **options))
        done.append((member, sub / "report.json"))
    echo(f"\nsuite index: {write_index(name, done, out)}")
    return status
