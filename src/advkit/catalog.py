"""Machine-readable descriptions of registered attacks and defenses (``advkit list/describe --json``).

``describe_entry`` returns name, family, class, threat tag, what the entry needs of a target, its
parameters and its documentation. Each parameter's type, default and constraints (interval,
choices, the allowed values in words) are read from its declaration (``advkit.params``), the same
declaration the constructor and the spec validator check; the threat tag is the one declared at
registration (``advkit.threat_tags``).
"""

from __future__ import annotations

import inspect
from typing import Any

from advkit import params as _params
from advkit.registry import Entry


def threat_tag(e: Entry) -> dict[str, Any] | None:
    """The entry's declared threat tag as JSON (None when it declares none)."""
    return e.threat.to_dict() if e.threat is not None else None


def parameters(e: Entry) -> list[dict[str, Any]]:
    """One dict per constructor parameter: name, type, default, required, allowed, optional,
    finite, constraints and doc, from the declarations."""
    return _params.describe(e.cls)


def describe_entry(e: Entry) -> dict[str, Any]:
    """Everything ``advkit describe NAME --json`` prints, as plain JSON-able values."""
    mod_doc = inspect.getdoc(inspect.getmodule(e.cls)) or ""
    return {
        "name": e.name,
        "family": e.family,
        "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
        "summary": e.summary,
        "requires": sorted(getattr(e.cls, "requires", ()) or ()),
        "threat": threat_tag(e),
        "parameters": parameters(e),
        "doc": inspect.getdoc(e.cls) or "",
        "module_doc": mod_doc,
    }


def list_entries(family: str | None = None) -> list[dict[str, Any]]:
    """Short machine-readable rows of ``advkit list --json``."""
    from advkit import registry

    return [{"name": e.name, "family": e.family, "summary": e.summary,
             "requires": sorted(getattr(e.cls, "requires", ()) or ()), "threat": threat_tag(e)}
            for e in registry.entries(family)]


def threat_line(e: Entry) -> str:
    """``'integrity / inference / white box — AML.T0043.000 Craft Adversarial Data: ...'``."""
    t = e.threat
    if t is None:
        return "threat: not tagged"
    head = "mitigates" if t.mitigates else "threat"
    related = f" (also {', '.join(t.related)})" if t.related else ""
    return (f"{head}: {t.property} / {t.phase} / {t.knowledge} — {t.atlas_id} {t.atlas_name}"
            f"{related} [ATLAS {t.atlas_release}]")
