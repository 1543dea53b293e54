"""Built-in audit presets.

A preset is an audit spec shipped in this folder as ``NAME.yaml`` (its ``title`` and first comment
line describe it; ``NAME.quick.yaml``, when present, is its small, fast version for ``--quick``),
run by the same runner as any spec, so every CLI flag works with it.

A preset may also be a **suite**: a file whose only keys are ``title`` and ``suite``, the list of
the presets it runs one after another, each with its own report (an audit has one dataset, so a
threat on two datasets is two audits)::

    # membership inference, inversion, extraction and the privacy defenses on digits and Adult
    title: "advkit privacy audit: digits and Adult"
    suite: [privacy-digits, privacy-adult]
"""

from __future__ import annotations

from pathlib import Path

from advkit.errors import AuditSpecError

FOLDER = Path(__file__).parent


def spec_presets() -> dict[str, Path]:
    """Preset name -> its spec file (quick versions excluded)."""
    return {p.name.removesuffix(".yaml"): p for p in sorted(FOLDER.glob("*.yaml"))
            if not p.name.endswith(".quick.yaml")}


def names() -> list[str]:
    return sorted(spec_presets())


def preset_path(name: str, *, quick: bool = False) -> Path:
    """The spec file of the preset ``name``; AuditSpecError when there is no such preset or no
    quick version of it."""
    specs = spec_presets()
    if name not in specs:
        raise AuditSpecError(f"unknown preset {name!r}; presets: {', '.join(names())} "
                             "(advkit audit --preset list describes each)")
    if not quick:
        return specs[name]
    q = FOLDER / f"{name}.quick.yaml"
    if not q.is_file():
        raise AuditSpecError(f"the preset {name!r} has no quick version; run it without --quick")
    return q


def suite(name: str, *, quick: bool = False) -> list[str] | None:
    """The member presets of the suite ``name`` (None when it is a plain spec); AuditSpecError
    when the suite file is malformed or names a preset that does not exist or is a suite."""
    path = preset_path(name, quick=quick)
    from advkit.audit.yaml_limits import load_yaml

    data = load_yaml(path.read_bytes(), source=str(path))
    if not isinstance(data, dict) or "suite" not in data:
        return None
    members = data["suite"]
    if set(data) - {"title", "suite"} or not isinstance(members, list) or not members or any(
            not isinstance(m, str) for m in members):
        raise AuditSpecError(f"{path}: a suite preset has only 'title' and 'suite' (a non-empty "
                             "list of preset names)")
    for m in members:
        if m == name or m not in spec_presets() or suite(m) is not None:
            raise AuditSpecError(f"{path}: suite member {m!r} is not a plain preset")
    return members


def describe(name: str) -> str:
    """One line about the preset: the first comment line of its spec file."""
    path = spec_presets()[name]
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return "audit spec"
