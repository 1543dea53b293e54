"""Built-in audit presets.

A preset is an audit spec shipped in this folder as ``NAME.yaml`` (its ``title`` and first comment
line describe it; ``NAME.quick.yaml``, when present, is its small, fast version for ``--quick``),
run by the same runner as any spec, so every CLI flag works with it.
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


def describe(name: str) -> str:
    """One line about the preset: the first comment line of its spec file."""
    path = spec_presets()[name]
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return "audit spec"
